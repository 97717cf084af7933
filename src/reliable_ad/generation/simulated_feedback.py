"""The embedded world's human feedback: the base generator's images of RF1M-synth products, labelled by the
simulated reviewer.

RF1M *is* this: images made by the production generator, each labelled by a person. RF1M-synth's renderings
teach RFNet the classes, but a judge trained only on them has never seen the generator's own blur and
artefacts (measured: ROC AUC 0.64 on generated images). This module makes the missing part: one image per
product from the generator (the first attempt of recurrent generation, same steps and prompts), labelled by the
reviewer, written as a feedback batch in the RF1M layout. It joins the data like any batch a reviewer team
sends: through `reliable_ad.data.feedback.ingest` (validation, maps computed there, its own manifest).

Products come from RF1M-synth at their own seed, so their ids never clash with the main dataset's, the
generator's pre-training products or the evaluation's; each keeps RF1M-synth's split rule (held-out categories
are the test split), so the judge is still tested on categories it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from reliable_ad.data import layout
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.imageio import encode_png
from reliable_ad.data.reviewer import product_mask, review
from reliable_ad.data.synth.products import Product
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.config import RecurrentConfig, SimulatedFeedbackConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for
from reliable_ad.labels import RF1M_LABELS

LABEL_IDS = {name: i for i, name in RF1M_LABELS.items()}


def feedback_products(count: int, seed: int, synth: SynthConfig) -> list[tuple[Product, str, str]]:
    """(product, category, split) for `count` suitable RF1M-synth products under `synth`'s split rule."""
    cfg = synth.model_copy(update={"n": max(count, 1), "seed": seed, "class_mix": {"available": 1.0}})
    cfg = cfg.model_copy(update={"samples_per_product": 1})
    out = []
    for i in range(count):
        sample = draw_sample(cfg, i)
        spec = sample.product
        out.append(
            (
                Product(spec.product_id, sample.rendering.product, spec.title, spec.height_cm),
                spec.category,
                sample.split,
            )
        )
    return out


@torch.no_grad()
def simulate_feedback(
    denoiser: Denoiser,
    pool: Sequence[PromptConfig],
    cfg: SimulatedFeedbackConfig,
    synth: SynthConfig,
    out: Path,
    batch_size: int = 16,
    progress: bool = True,
    generator: str | None = None,
) -> dict[str, int]:
    """Write a feedback batch of `cfg.products` x `cfg.images_per_product` generated images with the reviewer's
    labels to `out`; `generator` (the version of the ControlNet that made them) goes into each row's metadata, so
    a method tuning another version refuses the batch. Returns the count of each label."""
    products = feedback_products(cfg.products, cfg.product_seed, synth)
    # image j of every product comes from the jobs of seed + j (j = 0 is the batch of one image per product)
    work = [(i, j) for j in range(cfg.images_per_product) for i in range(len(products))]
    (out / layout.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / layout.PRODUCTS_DIR).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(RF1M_LABELS.values(), 0)
    with (
        (out / layout.LABEL_FILE).open("w") as labels,
        (out / layout.METADATA_FILE).open("w") as metadata,
        tqdm(total=len(work), desc="generate + review", unit="image", disable=not progress) as bar,
    ):
        for start in range(0, len(work), batch_size):
            chunk = work[start : start + batch_size]
            jobs = [job_for(products[i][0], i, 1, pool, RecurrentConfig(seed=cfg.seed + j)) for i, j in chunk]
            slots = [denoiser.start(job) for job in jobs]
            while not denoiser.done(slots[0]):
                denoiser.advance(slots)
            images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
            for (i, j), slot, image in zip(chunk, slots, images, strict=True):
                product, category, split = products[i]
                assert product.height_cm is not None  # RF1M-synth products always carry their height
                label = review(image, product_mask(product.rgba), product.height_cm).label
                counts[label] += 1
                name = f"g{cfg.product_seed}-{slot.job.key}{f'-{j}' if j else ''}.png"
                (out / layout.IMAGES_DIR / name).write_bytes(encode_png(image))
                (out / layout.PRODUCTS_DIR / name).write_bytes(encode_png(product.rgba))
                labels.write(f"{name}\t{LABEL_IDS[label]}\n")
                entry = {
                    "image": name,
                    "product_id": product.key,
                    "prompt": slot.job.prompt,
                    "title": product.caption,
                    "category": category,
                    "height_cm": product.height_cm,
                    "split": split,
                    "seed": slot.job.seed,
                    "source": "generated",
                    **({"generator": generator} if generator else {}),
                }
                metadata.write(json.dumps(entry) + "\n")
            bar.update(len(chunk))
    return counts
