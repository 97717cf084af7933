"""Settings every test run shares (no telemetry, no hub access, quiet progress bars) and shared fixtures."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


# the tiny models every test builds (as diffusers' get_dummy_components): small enough for a CPU, the real classes
TINY_RFNET = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1, "vocabulary": ["cm"]}
TINY_GENERATOR = {"unet_channels": (16, 32, 32), "vae_channels": (8, 16, 16)}


@pytest.fixture(scope="session")
def make_rfnet() -> Callable[..., Any]:
    """make_rfnet(seed=0, **config) -> a tiny random RFNet; keyword arguments change its config."""
    import torch

    from reliable_ad.models.config import RFNetConfig
    from reliable_ad.models.rfnet import RFNet

    def make(seed: int = 0, **config: Any) -> RFNet:
        torch.manual_seed(seed)
        return RFNet(RFNetConfig(**{**TINY_RFNET, **config}))

    return make


@pytest.fixture(scope="session")
def make_judge(make_rfnet: Callable[..., Any]) -> Callable[..., Any]:
    """make_judge(seed=0, **config) -> a judge over a tiny random RFNet."""
    from reliable_ad.judge import RFNetJudge

    return lambda seed=0, **config: RFNetJudge(make_rfnet(seed, **config))


@pytest.fixture(scope="session")
def make_components() -> Callable[..., Any]:
    """make_components(seed=0, **sizes) -> a tiny random generator (UNet, ControlNet, VAE, text encoder...)."""
    from reliable_ad.models.config import TinyGeneratorConfig
    from reliable_ad.models.generator import build_tiny_components

    return lambda seed=0, **sizes: build_tiny_components(TinyGeneratorConfig(**{**TINY_GENERATOR, **sizes}), seed)


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory, make_components: Callable[..., Any]) -> Path:
    """A tiny random generator pipeline folder (UNet, ControlNet, VAE, text encoder, tokenizer, scheduler)."""
    from reliable_ad.models.generator import save_components

    folder = tmp_path_factory.mktemp("generator") / "gen"
    save_components(make_components(), folder)
    return folder


@pytest.fixture(scope="session")
def tuned_controlnet(tmp_path_factory: pytest.TempPathFactory, make_components: Callable[..., Any]) -> Path:
    """The `generator`'s ControlNet nudged, as a fine-tuning run moves it: a candidate to compare and gate."""
    import torch

    components = make_components()
    with torch.no_grad():
        for parameter in components.controlnet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    folder = tmp_path_factory.mktemp("tuned") / "controlnet"
    components.controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def make_comparison() -> Callable[..., dict[str, Any]]:
    """make_comparison(**changes) -> a base-vs-tuned comparison (`compare_generators`' metrics) that says the
    candidate is far better by the judge (+0.75) and no different by the reviewer: what a gate is handed."""

    def make(**changes: Any) -> dict[str, Any]:
        return {
            "products": 4,
            "delta": 0.0,
            "delta_ci_low": -0.25,
            "delta_ci_high": 0.25,
            "available_rate_first_reviewer_tuned": 0.5,
            "available_rate_first_reviewer_base": 0.5,
            "delta_rfnet": 0.75,
            "delta_rfnet_ci_low": 0.5,
            "delta_rfnet_ci_high": 1.0,
            "available_rate_first_rfnet_tuned": 1.0,
            "available_rate_first_rfnet_base": 0.25,
            "guard_ok": True,
            "diversity_base": 10.0,
            "diversity_tuned": 10.0,
            **changes,
        }

    return make


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RF1M-synth dataset, imported and prepared: the input of training and evaluation tests."""
    from reliable_ad.data.config import ImportConfig, PrepareConfig, SynthConfig
    from reliable_ad.data.rf1m import import_dataset
    from reliable_ad.data.shards import prepare_shards
    from reliable_ad.data.synth.writer import write_synth

    root = tmp_path_factory.mktemp("tiny-shards")
    write_synth(SynthConfig(n=240, seed=5), root / "ds")
    import_dataset(root / "ds", ImportConfig())
    prepare_shards(root / "ds", root / "ds" / "manifest.parquet", root / "shards", PrepareConfig(samples_per_shard=80))
    return root / "shards"


@pytest.fixture(scope="session")
def tiny_dpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DPT depth model of the real architecture, tiny and random, saved as transformers saves one."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    folder = tmp_path_factory.mktemp("dpt")
    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        use_auxiliary_head=False,
    )
    DPTForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLflow store (SQLite + local artifacts) for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAD_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("RAD_LOCK_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_pretrained_encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ResNet and a BERT of the real architectures, tiny and random, saved as transformers saves them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, ResNetConfig, ResNetModel

    folder = tmp_path_factory.mktemp("encoders")
    ResNetModel(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ).save_pretrained(folder / "resnet")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "red", "mug", "cm"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        folder / "bert"
    )
    BertModel(
        BertConfig(vocab_size=5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(folder / "bert")
    return folder / "resnet", folder / "bert"


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process, fixed by the first Accelerator: a test that trains with other
    precision settings starts from, and leaves behind, a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _write_catalog(folder: Path, count: int = 20, heights: bool = True) -> Path:
    """`count` product photos never drawn by RF1M-synth: RGBA PNG cut-outs and RGB JPEGs on white, alternating,
    with a products.jsonl; a third have no split (hashed), the others an even spread of the three."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    rows = []
    for k in range(count):
        colour = tuple(int(c) for c in rng.integers(20, 200, 3))
        if k % 2:
            image = Image.new("RGB", (80, 120), "white")
            image.paste(colour, (20 + k % 5, 10, 60, 110))
            name = f"photos/item {k}.jpg"
        else:
            image = Image.new("RGBA", (100, 90), (0, 0, 0, 0))
            image.paste((*colour, 255), (10, 30, 90, 80 - k % 4))
            name = f"photos/item {k}.png"
        (folder / name).parent.mkdir(exist_ok=True)
        image.save(folder / name)
        row = {"image": name, "title": f"a product {k}, {10 + k} cm", "category": "boxes" if k % 3 else "cans"}
        if heights:
            row["height_cm"] = 10 + k
        if k % 3:
            row["split"] = ("train", "validation", "test")[k % 3 - 1 + (k % 2)]
        rows.append(row)
    (folder / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def write_catalog() -> Callable[..., Path]:
    """Writes a catalog folder of product photos never drawn by RF1M-synth (see `_write_catalog`)."""
    return _write_catalog
