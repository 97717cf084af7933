import json
from pathlib import Path

import numpy as np

from reliable_ad.data import layout
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.imageio import decode, to_rgb
from reliable_ad.data.reviewer import product_mask, review
from reliable_ad.data.synth.products import SynthProducts
from reliable_ad.generation.config import SimulatedFeedbackConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.simulated_feedback import LABEL_IDS, simulate_feedback

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]


def test_batch_is_in_the_rf1m_layout_with_the_reviewers_verdict_of_each_written_image(
    tmp_path: Path, make_components
) -> None:
    components = make_components()
    synth = SynthConfig(test_categories=["speaker", "mug"], val_fraction=0.2)
    counts = simulate_feedback(
        Denoiser(components, steps=2, guidance_scale=2.0),
        POOL,
        SimulatedFeedbackConfig(products=12, product_seed=31),
        SynthProducts(synth),
        tmp_path,
        batch_size=5,  # the last batch is a partial one
        progress=False,
    )
    assert sum(counts.values()) == 12
    labels = [line.split("\t") for line in (tmp_path / layout.LABEL_FILE).read_text().splitlines()]
    meta = [json.loads(line) for line in (tmp_path / layout.METADATA_FILE).read_text().splitlines()]
    assert [name for name, _ in labels] == [m["image"] for m in meta]
    assert len({m["image"] for m in meta}) == 12
    by_id = {i: name for name, i in LABEL_IDS.items()}
    for (name, label_id), entry in zip(labels, meta, strict=True):
        assert entry["product_id"].startswith("p31-") and entry["source"] == "generated"
        assert entry["split"] == "test" if entry["category"] in synth.test_categories else entry["split"] != "test"
        image = to_rgb(decode((tmp_path / layout.IMAGES_DIR / name).read_bytes(), name))
        product = decode((tmp_path / layout.PRODUCTS_DIR / name).read_bytes(), name)
        assert product.mode == "RGBA"
        verdict = review(image, product_mask(np.asarray(product)), entry["height_cm"]).label
        assert by_id[int(label_id)] == verdict  # the label is the reviewer's verdict of the image as written
