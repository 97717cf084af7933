import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from reliable_ad.data.dataset import read_index
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet
from reliable_ad.training import rfnet as rfnet_training
from reliable_ad.training.checkpoint import CheckpointMismatch
from reliable_ad.training.config import RFNetTrainConfig
from reliable_ad.training.rfnet import NonFiniteLoss, rfnet_loss, train_rfnet
from reliable_ad.training.rfnet_eval import Predictions, calibrate_threshold, evaluate_rfnet

SMALL = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1}


def _cfg(**kw) -> RFNetTrainConfig:
    return RFNetTrainConfig(model=RFNetConfig(**SMALL), batch_size=16, lr=1e-3, threads=1, **kw)


def test_train_and_evaluate(tiny_shards: Path, tmp_path: Path) -> None:
    summary = train_rfnet(_cfg(epochs=2, checkpoint_every=5), tiny_shards, tmp_path / "run")
    assert summary["steps"] > 0 and summary["processes"] == 1
    model = RFNet.load(tmp_path / "run" / "model")
    assert model.config.vocabulary, "the tiny text encoder's vocabulary comes from the training captions"
    # tau calibrated on the val split and saved with the model (or the reason it could not be)
    calibration = summary["calibration"]
    assert model.config.acceptance_threshold == calibration["threshold"] or "skipped" in calibration
    metrics = evaluate_rfnet(tmp_path / "run" / "model", tiny_shards, tmp_path / "m.json", tmp_path / "plots")
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["n"] > 0
    headline = json.loads((tmp_path / "m.json").read_text())
    assert {"macro_f1", "accuracy", "ap_available", "ece"} <= set(headline)
    assert (tmp_path / "plots" / "rfnet_evaluation.png").stat().st_size > 1000
    assert sum(sum(row) for row in metrics["confusion"]) == metrics["n"]


def test_maps_of_another_kind_are_refused(tiny_shards: Path, tmp_path: Path) -> None:
    cfg = RFNetTrainConfig(model=RFNetConfig(**SMALL, depth_extractor="dpt"), epochs=1)
    with pytest.raises(ValueError, match="depth maps were made by 'ground'"):
        train_rfnet(cfg, tiny_shards, tmp_path / "run")


def test_evaluation_refuses_shards_whose_maps_the_judge_cannot_make(
    tiny_shards: Path, tmp_path: Path, make_rfnet
) -> None:
    make_rfnet(depth_extractor="dpt:/models/dpt").save(tmp_path / "model")
    with pytest.raises(ValueError, match="depth maps were made by 'ground'"):
        evaluate_rfnet(tmp_path / "model", tiny_shards, tmp_path / "m.json", tmp_path / "plots")


def test_model_image_size_must_be_the_shards(tiny_shards: Path, tmp_path: Path) -> None:
    """The judge resizes new images to the model's image_size, so training at another size is refused."""
    cfg = RFNetTrainConfig(model=RFNetConfig(**SMALL, image_size=32), epochs=1)
    with pytest.raises(ValueError, match="hold 64 px images, the model's image_size is 32"):
        train_rfnet(cfg, tiny_shards, tmp_path / "run")


def test_resume_needs_the_same_data_and_fresh_starts_clean(tiny_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_rfnet(_cfg(epochs=2, checkpoint_every=3), tiny_shards, out)
    other = tmp_path / "other-shards"  # the same rows under an index that says otherwise: another data version
    shutil.copytree(tiny_shards, other)
    index = json.loads((other / "index.json").read_text())
    index["rows_in"] += 1
    (other / "index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointMismatch):
        train_rfnet(_cfg(epochs=2, checkpoint_every=3), other, out)
    train_rfnet(_cfg(epochs=1, checkpoint_every=3), other, out, resume=False)
    prints = {json.loads((c / "state.json").read_text())["fingerprint"] for c in (out / "checkpoints").iterdir()}
    assert len(prints) == 1, "a fresh run leaves no checkpoint of the earlier run behind"


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_shards: Path, tmp_path: Path, monkeypatch) -> None:
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    class PoisonedF:
        """torch.nn.functional whose loss turns NaN at the 5th step."""

        def __getattr__(self, name: str):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def cross_entropy(*args, **kwargs):
            calls["n"] += 1
            loss = real(*args, **kwargs)
            return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(rfnet_training, "F", PoisonedF())
    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        train_rfnet(_cfg(epochs=3, checkpoint_every=2), tiny_shards, tmp_path / "run")
    kept = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    checkpoint = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000004" / "model-rfnet.safetensors"))
    assert all(torch.equal(kept[k], checkpoint[k]) for k in checkpoint)


def _train_rows(shards: Path) -> int:
    return read_index(shards)["rows"]["train"]


def _train_command(shards: Path, out: Path, params: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reliable_ad.cli",
        "rfnet",
        "train",
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--params",
        str(params),
    ]


def _params(tmp_path: Path, **train) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    body = {"model": SMALL, "batch_size": 16, "lr": 1e-3, "threads": 1, **train}
    path.write_text(yaml.safe_dump({"rfnet": {"train": body}}))
    return path


def test_resume_after_the_process_is_killed(tiny_shards: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, epochs=6, checkpoint_every=3)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _train_command(tiny_shards, out, params), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-00000006")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model").exists(), "the killed run must not have finished"
    done = subprocess.run(_train_command(tiny_shards, out, params), env=env, capture_output=True, text=True, check=True)
    assert "resumed from" in done.stdout + done.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 6 * (_train_rows(tiny_shards) // 16)  # all steps, those before the kill included


@pytest.mark.parametrize("encoders", ["tiny", "pretrained"])
def test_two_cpu_processes_under_accelerate_launch(
    encoders: str, tiny_shards: Path, tiny_pretrained_encoders: tuple[Path, Path], tmp_path: Path
) -> None:
    """Pretrained backbones hold parameters the judge never uses (BERT's pooler): DDP must allow them."""
    resnet, bert = tiny_pretrained_encoders
    model = {} if encoders == "tiny" else {"image_encoder": str(resnet), "text_encoder": str(bert)}
    params = _params(tmp_path, epochs=1, model={**SMALL, **model})
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun under the hood; on a machine without GPUs the processes use gloo on CPU
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "reliable_ad.cli",
        "rfnet",
        "train",
        "--shards",
        str(tiny_shards),
        "--out",
        str(tmp_path / "run"),
        "--params",
        str(params),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["steps"] == _train_rows(tiny_shards) // (16 * 2)


def test_source_weights_scale_each_rows_share_of_the_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    sources = ["rf1m-synth"] * 3 + ["rf1m-gen"] * 3
    classes = torch.tensor([1.0, 2.0, 0.5])
    plain = F.cross_entropy(logits, labels, weight=classes)
    assert torch.isclose(rfnet_loss(logits, labels, classes, sources, {}), plain)
    assert torch.isclose(rfnet_loss(logits, labels, classes, sources, {"rf1m-gen": 1.0}), plain)
    # weight 0 on one source: the loss of the other source's rows alone
    only_synth = F.cross_entropy(logits[:3], labels[:3], weight=classes)
    assert torch.isclose(rfnet_loss(logits, labels, classes, sources, {"rf1m-gen": 0.0}), only_synth)
    # weight 3: as if every generated row were there three times
    tripled = F.cross_entropy(
        torch.cat([logits[:3], *[logits[3:]] * 3]), torch.cat([labels[:3], *[labels[3:]] * 3]), weight=classes
    )
    assert torch.isclose(rfnet_loss(logits, labels, classes, sources, {"rf1m-gen": 3.0}), tripled)
    with pytest.raises(ValueError, match="source weights must be >= 0"):
        RFNetTrainConfig(source_weights={"rf1m-gen": -1.0})


def test_tau_maximises_f_beta_on_held_out_rows() -> None:
    labels = ["available", "space_mismatch"]
    p_available = np.array([0.9, 0.8, 0.6, 0.5, 0.4, 0.35, 0.2, 0.1])
    target = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # 0 = available
    probabilities = np.stack([p_available, 1 - p_available], axis=1).astype(np.float32)
    rows = Predictions([str(i) for i in range(8)], ["p"] * 8, target, probabilities, labels, ["gen"] * 8)
    # beta 1: accept down to 0.35 (all 4 available, 2 wrong: F1 0.80); beta 0.5 prefers precision: 0.8 (F0.5 0.83)
    assert calibrate_threshold(rows, beta=1.0)["threshold"] == pytest.approx(0.35)
    precise = calibrate_threshold(rows, beta=0.5)
    assert precise["threshold"] == pytest.approx(0.8) and precise["precision"] == 1.0
    with pytest.raises(ValueError, match="needs available and other rows"):
        calibrate_threshold(rows.subset(target == 0))


def test_class_weights_balance_the_training_split() -> None:
    index = {"label_counts": {"train": {"available": 30, "size_mismatch": 10}}}
    weights = rfnet_training._class_weights(index, ["available", "size_mismatch", "unsuitable"])
    # inverse frequency, normalised over the classes present; an absent class weighs nothing
    assert torch.allclose(weights, torch.tensor([40 / 60, 40 / 20, 0.0]))


def test_a_five_way_model_trains_and_evaluates_without_the_unsuitable_rows(tiny_shards: Path, tmp_path: Path) -> None:
    five = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]
    refused = RFNetTrainConfig(model=RFNetConfig(**SMALL, labels=five), epochs=1)
    with pytest.raises(ValueError, match="unsuitable"):
        train_rfnet(refused, tiny_shards, tmp_path / "refused")
    cfg = RFNetTrainConfig(
        model=RFNetConfig(**SMALL, labels=five, other_labels="skip"), epochs=1, batch_size=16, lr=1e-3, threads=1
    )
    summary = train_rfnet(cfg, tiny_shards, tmp_path / "run")
    unsuitable = read_index(tiny_shards)["label_counts"]["train"]["unsuitable"]
    assert summary["train_rows_left_out"] == unsuitable > 0
    assert summary["train_rows"] + unsuitable == _train_rows(tiny_shards)
    metrics = evaluate_rfnet(tmp_path / "run" / "model", tiny_shards, tmp_path / "m.json", tmp_path / "plots")
    assert set(metrics["per_class"]) == set(five) and metrics["confusion"] and len(metrics["confusion"]) == 5


def test_mixed_precision_path_runs(tiny_shards: Path, tmp_path: Path, fresh_accelerate_state) -> None:
    """bf16 autocast on CPU stands in for the GPU's mixed precision: same code path, finite loss, loadable model."""
    summary = train_rfnet(_cfg(epochs=1, mixed_precision="bf16"), tiny_shards, tmp_path / "run")
    assert summary["final_loss"] is not None and np.isfinite(summary["final_loss"])
    assert RFNet.load(tmp_path / "run" / "model").config.labels


def test_calibrating_on_a_source_without_rows_names_the_sources(tiny_shards: Path, tmp_path: Path, make_rfnet) -> None:
    from reliable_ad.training.rfnet_eval import calibrate_rfnet

    make_rfnet().save(tmp_path / "model")
    with pytest.raises(ValueError, match=r"no rows of source 'rf1m-gen' \(sources: \['ds'\]\)"):
        calibrate_rfnet(tmp_path / "model", tiny_shards, "val", "rf1m-gen")
    assert RFNet.load(tmp_path / "model").config.acceptance_threshold is None  # nothing written
