import json
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from pydantic import ValidationError

from reliable_ad.generation.config import RFFTConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.judge import Judge, JudgeInputError
from reliable_ad.models.generator import TinyGeneratorConfig, build_tiny_components, load_components, save_components
from reliable_ad.models.rfnet import RFNet, RFNetConfig
from reliable_ad.training.checkpoint import CheckpointMismatch
from reliable_ad.training.rfft import rfft_train

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rfft") / "gen"
    save_components(
        build_tiny_components(TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16))), folder
    )
    return folder


def _judge() -> Judge:
    torch.manual_seed(0)
    return Judge(RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])))


def _cfg(**kw) -> RFFTConfig:
    base = {
        "steps": 3,
        "batch_size": 2,
        "inference_steps": 4,
        "last_k": 2,
        "products": 4,
        "lr": 1e-3,
        "checkpoint_every": 2,
        "threads": 1,
    }
    return RFFTConfig(**{**base, **kw})


@pytest.mark.parametrize("regularizer", ["cc", "kl", "none"])
def test_only_the_controlnet_changes_and_the_result_loads_in_the_stock_pipeline(generator, tmp_path, regularizer):
    judge = _judge()
    before = {k: v.clone() for k, v in judge.model.state_dict().items()}
    summary = rfft_train(_cfg(regularizer=regularizer), generator, judge, POOL, tmp_path / "run")
    assert summary["steps"] == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(0.0 <= r["p_available"] <= 1.0 for r in log)
    # the tuned model starts as the frozen one: the regulariser is 0 at first, then grows unless switched off
    assert log[0]["regularizer"] == 0.0
    assert (log[-1]["regularizer"] > 0.0) == (regularizer != "none")
    assert all(torch.equal(before[k], v) for k, v in judge.model.state_dict().items())
    tuned = ControlNetModel.from_pretrained(tmp_path / "run" / "controlnet", use_safetensors=True)
    original = load_components(generator).controlnet
    changed = [not torch.equal(a, b) for a, b in zip(tuned.parameters(), original.parameters(), strict=True)]
    assert any(changed)
    components = load_components(generator, tmp_path / "run" / "controlnet")  # stock pipeline, tuned ControlNet
    assert components.pipeline() is not None


def test_resume_and_refusals(generator, tmp_path) -> None:
    rfft_train(_cfg(steps=2), generator, _judge(), POOL, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "step-00000002").exists()
    with pytest.raises(CheckpointMismatch, match="same settings"):
        rfft_train(_cfg(steps=4, beta=0.5), generator, _judge(), POOL, tmp_path / "run")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        _cfg(beta=-1.0)
    with pytest.raises(ValidationError, match="last_k 8 is larger than inference_steps 4"):
        _cfg(last_k=8)


def test_a_judge_that_cannot_backpropagate(generator, tmp_path) -> None:
    class Detached(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config, self.available_index = model, model.config, model.available_index

        def forward(self, inputs):
            return self.model({k: (v.detach() if torch.is_tensor(v) else v) for k, v in inputs.items()}).detach()

    judge = _judge()
    judge.model = Detached(judge.model)
    with pytest.raises(JudgeInputError, match="cannot backpropagate"):
        rfft_train(_cfg(), generator, judge, POOL, tmp_path / "run")


def test_a_controlnet_that_does_not_fit_the_unet(generator, tmp_path) -> None:
    other = build_tiny_components(TinyGeneratorConfig(unet_channels=(32, 64, 64), vae_channels=(8, 16, 16)))
    other.controlnet.save_pretrained(tmp_path / "cn", safe_serialization=True)
    with pytest.raises(ValueError, match="ControlNet does not match the UNet"):
        rfft_train(_cfg(), generator, _judge(), POOL, tmp_path / "run", controlnet=tmp_path / "cn")
