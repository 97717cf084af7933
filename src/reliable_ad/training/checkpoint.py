"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``model-<name>.safetensors`` per module, ``optimizer.safetensors`` with the
optimizer's per-parameter tensors, and ``state.json`` with the step, the optimizer's hyper-parameters, the
run's config fingerprint and any scalars. Loading reads tensors and JSON only, so a checkpoint from anywhere
can be resumed without executing code from it. A checkpoint is written to a temporary folder and renamed,
so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reliable_ad.errors import InputError

STATE_FILE = "state.json"


class CheckpointMismatch(InputError):
    """A checkpoint written by a run with a different configuration."""


def fingerprint(config: dict[str, Any]) -> str:
    """A short hash of the settings that must not change across a resume."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config_fingerprint: str,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write `folder/step-<step>` atomically and keep only the newest `keep` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / f"model-{name}.safetensors"))
    state: dict[str, Any] = {"step": step, "fingerprint": config_fingerprint, "extra": extra or {}}
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        tensors = {}
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in opt_state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state["optimizer"] = {"param_groups": opt_state["param_groups"], "scalars": scalars}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    done = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).exists()) if folder.exists() else []
    return done[-1] if done else None


def load_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    config_fingerprint: str,
) -> dict[str, Any]:
    """Restore modules (and optimizer) from `path`; refuse a checkpoint of another configuration."""
    state = json.loads((path / STATE_FILE).read_text())
    if state["fingerprint"] != config_fingerprint:
        raise CheckpointMismatch(
            f"checkpoint {path} was written with config {state['fingerprint']}, this run has "
            f"{config_fingerprint} (other settings, data or warm start): resume with the same ones, or start "
            f"afresh (--fresh) or in a new output folder"
        )
    for name, module in modules.items():
        module.load_state_dict(load_file(str(path / f"model-{name}.safetensors")))
    if optimizer is not None and "optimizer" in state:
        tensors = load_file(str(path / "optimizer.safetensors"))
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        for index, values in state["optimizer"]["scalars"].items():
            per_param.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    return state
