import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from pydantic import ValidationError

from reliable_ad.api.common import rfft_products, rfft_renders
from reliable_ad.data.hashing import folder_hash
from reliable_ad.errors import UserError
from reliable_ad.generation.config import RFFTConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.judge import JudgeEnsemble, JudgeInputError, RFNetJudge
from reliable_ad.models.generator import load_components
from reliable_ad.params import Params
from reliable_ad.training.checkpoint import CheckpointMismatch
from reliable_ad.training.rfft import feedback_loss, gaussian_blur, regularizer_loss, rfft_train, trained_against
from reliable_ad.training.rfft_select import last_snapshot, snapshots

FIVE_WAY = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
# the training products and the anchor's renders of `_cfg` (4 products of RFFT's default seed), as the API draws them
PRODUCTS = rfft_products(Params.model_validate({"generation": {"rfft": {"products": 4}}}))
RENDERS = rfft_renders(Params())


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


def _log(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("regularizer", ["cc", "kl", "none"])
def test_only_the_controlnet_changes_and_the_result_loads_in_the_stock_pipeline(
    generator, tmp_path, regularizer, make_judge
):
    judge = make_judge()
    before = {k: v.clone() for k, v in judge.model.state_dict().items()}
    cfg = _cfg(regularizer=regularizer)
    summary = rfft_train(cfg, generator, judge, POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert summary["steps"] == 3 and summary["resumed_at_step"] == 0
    log = _log(tmp_path / "run")
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
    assert RFFTConfig.saved_in(tmp_path / "run" / "controlnet") == cfg  # the settings travel with the weights


def test_an_interrupted_run_resumes_at_its_checkpoint_without_redoing_steps(
    generator, tmp_path, capsys, make_judge
) -> None:
    run, cfg = tmp_path / "run", _cfg(steps=3, checkpoint_every=2)
    rfft_train(cfg, generator, make_judge(), POOL, run, PRODUCTS, RENDERS)
    uninterrupted = ControlNetModel.from_pretrained(run / "controlnet", use_safetensors=True)
    first = _log(run)
    # as if killed after logging step 3, before the weights were written: the checkpoint of step 2 is the last
    shutil.rmtree(run / "controlnet")
    (run / "rfft_summary.json").unlink()
    summary = rfft_train(cfg, generator, make_judge(), POOL, run, PRODUCTS, RENDERS)
    assert summary["resumed_at_step"] == 2 and "resumed from" in capsys.readouterr().out
    log = _log(run)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert log[:2] == first[:2]  # steps 1 and 2 kept as logged, step 3 logged once, by the resumed run
    resumed = ControlNetModel.from_pretrained(run / "controlnet", use_safetensors=True)
    pairs = zip(resumed.parameters(), uninterrupted.parameters(), strict=True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in pairs)  # weights and AdamW state were restored


def test_a_run_with_other_settings_is_refused(generator, tmp_path, make_judge) -> None:
    rfft_train(_cfg(steps=2), generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert (tmp_path / "run" / "checkpoints" / "step-00000002").exists()
    with pytest.raises(
        CheckpointMismatch, match="other settings, data or warm start"
    ):  # beta alone is part of the fingerprint
        rfft_train(_cfg(steps=2, beta=0.5), generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)


def test_a_fresh_run_leaves_nothing_of_the_earlier_one(generator, tmp_path, make_judge) -> None:
    run = tmp_path / "run"
    rfft_train(_cfg(steps=2, checkpoint_every=1), generator, make_judge(), POOL, run, PRODUCTS, RENDERS)
    assert len(list((run / "checkpoints").iterdir())) == 2
    # other settings, which a resume would refuse, and no checkpoint of its own (1 step, one every 2)
    summary = rfft_train(_cfg(steps=1, beta=0.5), generator, make_judge(), POOL, run, PRODUCTS, RENDERS, resume=False)
    assert summary["resumed_at_step"] == 0
    assert [r["step"] for r in _log(run)] == [1]
    assert not (run / "checkpoints").exists()
    assert RFFTConfig.saved_in(run / "controlnet") == _cfg(steps=1, beta=0.5)


def test_cc_compares_guidance_directions_and_kl_guided_predictions(generator) -> None:
    denoiser = Denoiser(load_components(generator), 4, guidance_scale=2.0)
    one = torch.ones(1, 4, 2, 2)
    tuned = (0 * one, one)  # (unconditional, text): direction 1, guided 0 + 2 * 1 = 2
    same_guided = (one, 1.5 * one)  # direction 0.5, guided 1 + 2 * 0.5 = 2
    same_direction = (one, 2 * one)  # direction 1, guided 1 + 2 * 1 = 3
    assert float(regularizer_loss("kl", denoiser, tuned, same_guided)) == 0.0
    assert float(regularizer_loss("cc", denoiser, tuned, same_guided)) == pytest.approx(0.25)
    assert float(regularizer_loss("cc", denoiser, tuned, same_direction)) == 0.0
    assert float(regularizer_loss("kl", denoiser, tuned, same_direction)) == pytest.approx(1.0)


def test_the_denoising_anchor_is_logged(generator, tmp_path, make_judge) -> None:
    rfft_train(_cfg(steps=1, anchor=0.5), generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert _log(tmp_path / "run")[0]["anchor"] > 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        _cfg(beta=-1.0)
    with pytest.raises(ValidationError, match="last_k 8 is larger than inference_steps 4"):
        _cfg(last_k=8)


def test_a_judge_that_cannot_backpropagate(generator, tmp_path, make_judge) -> None:
    class Detached(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config, self.available_index = model, model.config, model.available_index

        def forward(self, inputs):
            return self.model({k: (v.detach() if torch.is_tensor(v) else v) for k, v in inputs.items()}).detach()

    judge = make_judge()
    judge.model = Detached(judge.model)
    with pytest.raises(JudgeInputError, match="cannot backpropagate"):
        rfft_train(_cfg(), generator, judge, POOL, tmp_path / "run", PRODUCTS, RENDERS)


def test_a_judge_that_detaches_only_the_image_inside(make_judge) -> None:
    class ImageDetached(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config, self.available_index = model, model.config, model.available_index

        def forward(self, inputs):
            return self.model({**inputs, "generated": inputs["generated"].detach()})

    make_judge().requires_grad_check()  # the real judge passes
    judge = make_judge()
    judge.model = ImageDetached(judge.model)
    probe = torch.rand(1, 3, 64, 64, requires_grad=True)
    product = np.zeros((64, 64, 4), np.uint8)
    assert judge(probe, [product], ["probe"], grad=True).logits.requires_grad  # through its weights only
    with pytest.raises(JudgeInputError, match="cannot backpropagate"):
        judge.requires_grad_check()


def test_two_cpu_processes_under_accelerate_launch(generator, tmp_path, make_judge) -> None:
    import yaml

    make_judge().model.save(tmp_path / "judge")
    rfft = _cfg(steps=2).model_dump(mode="json")
    prompts = Path(__file__).parents[2] / "configs" / "prompts_embedded.json"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"generation": {"prompts": str(prompts), "rfft": rfft}}))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "reliable_ad.cli", "rfft", "train", "--out", str(tmp_path / "run"), "--generator", str(generator),
        "--judge", str(tmp_path / "judge"), "--params", str(tmp_path / "params.yaml"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=300)
    summary = json.loads((tmp_path / "run" / "rfft_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]  # one writer
    ControlNetModel.from_pretrained(tmp_path / "run" / "controlnet", use_safetensors=True)
    assert RFFTConfig.saved_in(tmp_path / "run" / "controlnet") == _cfg(steps=2)


def test_a_controlnet_that_does_not_fit_the_unet(generator, tmp_path, make_judge, make_components) -> None:
    other = make_components(unet_channels=(32, 64, 64))
    other.controlnet.save_pretrained(tmp_path / "cn", safe_serialization=True)
    with pytest.raises(ValueError, match="ControlNet does not match the UNet"):
        rfft_train(
            _cfg(), generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS, controlnet=tmp_path / "cn"
        )


def test_mixed_precision_and_gradient_checkpointing_paths_run(
    generator, tmp_path, fresh_accelerate_state, make_judge
) -> None:
    """bf16 autocast on CPU and checkpointed ControlNet blocks: the GPU settings' code paths, on tiny parts."""
    cfg = _cfg(steps=1, mixed_precision="bf16", gradient_checkpointing=True)
    summary = rfft_train(cfg, generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert summary["steps"] == 1
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(record["feedback"]) for record in log)


def test_the_capped_reward_stops_pushing_images_already_confidently_available() -> None:
    log_p = torch.log(torch.tensor([0.2, 0.5, 0.95], requires_grad=True))
    log_p.retain_grad()
    feedback_loss(log_p, _cfg(reward="capped", reward_cap=0.9)).backward()
    assert log_p.grad is not None and log_p.grad.tolist() == pytest.approx([-1 / 3, -1 / 3, 0.0])
    plain = torch.log(torch.tensor([0.2, 0.5, 0.95]))
    assert float(feedback_loss(plain, _cfg())) == pytest.approx(float(-plain.mean()))  # the paper's CE


def test_an_ensemble_trains_and_is_recorded_with_the_controlnet(generator, tmp_path, make_judge) -> None:
    for name in ("a", "b"):
        make_judge().model.save(tmp_path / name)
    ensemble = JudgeEnsemble([RFNetJudge.from_path(tmp_path / "a"), RFNetJudge.from_path(tmp_path / "b")], "min")
    rfft_train(_cfg(steps=1), generator, ensemble, POOL, tmp_path / "run", PRODUCTS, RENDERS)
    hashes = trained_against(tmp_path / "run" / "controlnet")
    assert hashes == [folder_hash(tmp_path / "a"), folder_hash(tmp_path / "b")]


def test_snapshots_are_saved_every_select_every_steps_and_at_the_end(generator, tmp_path, make_judge) -> None:
    cfg = _cfg(steps=3, select={"every": 2, "by": "reviewer"})
    rfft_train(cfg, generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert [step for step, _ in snapshots(tmp_path / "run")] == [2, 3]
    assert last_snapshot(tmp_path / "run") == tmp_path / "run" / "snapshots" / "step-000003"  # what people see next
    assert last_snapshot(generator) is None
    ControlNetModel.from_pretrained(tmp_path / "run" / "snapshots" / "step-000002", use_safetensors=True)
    with pytest.raises(ValidationError, match="nothing to choose from"):
        _cfg(select={"every": 0, "by": "reviewer"})
    with pytest.raises(ValidationError, match=r"no select\.judge folder"):
        _cfg(select={"by": "judge"})


def test_the_reward_can_judge_blurred_images_so_pixel_patterns_earn_nothing(generator, tmp_path, make_judge) -> None:
    checker = torch.zeros(1, 3, 16, 16)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = 1.0  # the finest pattern there is
    blurred = gaussian_blur(checker, 1.5)
    assert blurred.shape == checker.shape and float(blurred.std()) < 0.05 * float(checker.std())
    assert torch.allclose(blurred.mean(), checker.mean(), atol=1e-6)  # blurring moves no light around
    rfft_train(_cfg(steps=1, reward_blur=1.0), generator, make_judge(), POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert np.isfinite(_log(tmp_path / "run")[0]["feedback"])


def test_the_anchor_can_learn_from_the_controlnets_own_accepted_samples(generator, tmp_path, make_judge) -> None:
    judge = make_judge()
    judge.config.acceptance_threshold = 0.0  # accepts every sample: the pool is the whole first-attempt batch
    cfg = _cfg(steps=2, feedback_weight=0.0, regularizer="none", anchor=1.0, anchor_data="accepted", anchor_pool=3)
    rfft_train(cfg, generator, judge, POOL, tmp_path / "run", PRODUCTS, RENDERS)
    assert all(record["anchor"] > 0 and record["feedback"] == 0 for record in _log(tmp_path / "run"))
    judge.config.acceptance_threshold = 1.0  # accepts nothing: there is nothing to learn from, said so
    with pytest.raises(UserError, match="accepted none of 3 samples"):
        rfft_train(cfg, generator, judge, POOL, tmp_path / "again", PRODUCTS, RENDERS)
