import pytest
import torch

from reliable_ad.training.checkpoint import (
    CheckpointMismatch,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_round_trip_restores_weights_and_optimizer(tmp_path) -> None:
    model, optimizer = _model_and_optimizer(0)
    fp = fingerprint({"lr": 1e-3})
    path = save_checkpoint(tmp_path, {"net": model}, optimizer, 3, fp, {"note": "x"})
    other, other_opt = _model_and_optimizer(1)
    state = load_checkpoint(path, {"net": other}, other_opt, fp)
    assert state["step"] == 3 and state["extra"] == {"note": "x"}
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(
        optimizer.state_dict()["state"].items(), other_opt.state_dict()["state"].items(), strict=True
    ):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)


def test_old_checkpoints_are_pruned_and_partial_ones_ignored(tmp_path) -> None:
    model, optimizer = _model_and_optimizer(0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, {"net": model}, optimizer, step, "fp", keep=2)
    (tmp_path / "step-00000009").mkdir()  # killed before state.json was written
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003", "step-00000009"]
    assert latest_checkpoint(tmp_path).name == "step-00000003"


def test_resume_from_another_config_is_refused(tmp_path) -> None:
    model, optimizer = _model_and_optimizer(0)
    path = save_checkpoint(tmp_path, {"net": model}, optimizer, 1, fingerprint({"lr": 1}))
    with pytest.raises(CheckpointMismatch, match="other settings, data or warm start"):
        load_checkpoint(path, {"net": model}, optimizer, fingerprint({"lr": 2}))
