from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.products import SynthProducts
from reliable_ad.generation.config import LabelTuneConfig, MethodsConfig, SimulatedFeedbackConfig, check_method
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.simulated_feedback import simulate_feedback
from reliable_ad.training.from_labels import (
    CONFIG_FILE,
    LabelBatchError,
    LabelledBatch,
    check_batch,
    read_labelled_batch,
    same_product_pairs,
    tune_on_labels,
)
from reliable_ad.training.pretrain_generator import Example

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]


def _batch(available: list[bool], products: list[str]) -> LabelledBatch:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    product = np.zeros((32, 32, 4), np.uint8)
    product[10:22, 10:22] = 200
    examples = [Example(image, product, "a product on a oak desktop") for _ in available]
    return LabelledBatch(examples, np.array(available), products, "round-1")


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory, make_components) -> Path:
    """A batch in the RF1M layout: the tiny generator's images of 4 products, 2 each, labelled by the reviewer."""
    folder = tmp_path_factory.mktemp("batch")
    cfg = SimulatedFeedbackConfig(products=4, product_seed=41, images_per_product=2)
    denoiser = Denoiser(make_components(), steps=2, guidance_scale=2.0)
    simulate_feedback(
        denoiser, POOL, cfg, SynthProducts(SynthConfig()), folder, batch_size=8, progress=False, generator="cn-1"
    )
    return folder


def test_a_batch_is_read_in_place_with_every_row_and_its_verdict(labelled_folder: Path) -> None:
    before = sorted(p.name for p in labelled_folder.iterdir())
    batch = read_labelled_batch(labelled_folder, "cn-1")
    assert len(batch.examples) == len(batch.available) == 8 and len(set(batch.product_ids)) == 4
    assert batch.examples[0].image.shape[-1] == 3 and batch.examples[0].product.shape[-1] == 4
    assert sorted(p.name for p in labelled_folder.iterdir()) == before  # nothing written into the user's folder


def test_labels_of_another_generator_version_are_refused_naming_both(labelled_folder: Path) -> None:
    with pytest.raises(LabelBatchError, match=r"metadata.jsonl, line 1: .*generator cn-1.*being tuned is cn-2"):
        read_labelled_batch(labelled_folder, "cn-2")


def test_a_folder_without_labels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelBatchError, match=r"no label\.txt"):
        read_labelled_batch(tmp_path, None)


@pytest.mark.parametrize(
    ("available", "message"),
    [([True, True], "0 undesirable"), ([False, False], "0 desirable")],
)
def test_kto_needs_both_kinds_of_image_and_names_the_counts(available: list[bool], message: str) -> None:
    with pytest.raises(LabelBatchError, match=f"KTO needs desirable and undesirable.*{message}"):
        check_batch(_batch(available, ["p1", "p2"]), "kto")


def test_dpo_without_a_product_holding_both_labels_says_so() -> None:
    batch = _batch([True, False, True], ["p1", "p2", "p3"])
    assert same_product_pairs(batch) == []
    with pytest.raises(LabelBatchError, match="none of the 3 products holds both"):
        check_batch(batch, "dpo")
    paired = _batch([True, False, False], ["p1", "p1", "p1"])
    assert same_product_pairs(paired) == [(0, 1), (0, 2)]


def test_a_method_not_in_the_set_is_refused_listing_the_set() -> None:
    with pytest.raises(ValueError, match="unknown method 'ppo' in 'prompts\\+ppo': methods are prompts, sft, kto, dpo"):
        MethodsConfig(methods=["kto", "prompts+ppo"])
    with pytest.raises(ValueError, match="more than one weight update"):
        check_method("sft+kto")
    assert check_method("prompts+kto") == ["prompts", "kto"]


@pytest.mark.parametrize("method", ["sft", "kto", "dpo"])
def test_each_method_moves_the_controlnet_and_saves_snapshots(method: str, generator: Path, tmp_path: Path) -> None:
    batch = _batch([True, False, True, False], ["p1", "p1", "p2", "p2"])
    cfg = LabelTuneConfig(steps=2, batch_size=4, lr=1e-3, warmup=0, snapshot_every=1, threads=1)
    result = tune_on_labels(cfg, method, generator, batch, tmp_path, progress=False)
    assert result["steps"] == 2 and (result["pairs"] == 2) == (method == "dpo")
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step-000001", "step-000002"]
    tuned = ControlNetModel.from_pretrained(tmp_path / "controlnet", use_safetensors=True)
    base = ControlNetModel.from_pretrained(generator / "controlnet", use_safetensors=True)
    moved = [not torch.equal(a, b.to(a.dtype)) for a, b in zip(tuned.parameters(), base.parameters(), strict=True)]
    assert any(moved)
    assert (tmp_path / "controlnet" / CONFIG_FILE).exists()
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 2
