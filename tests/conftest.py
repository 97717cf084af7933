"""Settings every test run shares (no telemetry, no hub access, quiet progress bars) and shared fixtures."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random generator pipeline folder (UNet, ControlNet, VAE, text encoder, tokenizer, scheduler)."""
    from reliable_ad.models.config import TinyGeneratorConfig
    from reliable_ad.models.generator import build_tiny_components, save_components

    folder = tmp_path_factory.mktemp("generator") / "gen"
    save_components(
        build_tiny_components(TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16))), folder
    )
    return folder


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
