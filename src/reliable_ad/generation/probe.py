"""Early signals of the final verdict from the denoiser's own activations (Probe-Select's idea).

A `FeatureTap` hooks blocks of the UNet and the ControlNet; while it captures, each block's output is
average-pooled to a small grid and kept, so the forward pass the denoiser runs anyway yields the features:
no extra UNet call, no VAE decode. A `Probe` is a logistic head on those features at one step, trained on
first attempts that were run to the end once and judged (its labels cost no human), that predicts whether the
judge will accept the finished image. A probe belongs to one generator (UNet, ControlNet) and one judge: it
is saved with their folder hashes and refused under any other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reliable_ad.errors import InputError
from reliable_ad.models.generator import GeneratorComponents

TAPPED = ("unet.mid_block", "unet.up_blocks", "controlnet.mid_block")  # the default blocks a tap pools
WEIGHTS_FILE = "probe.safetensors"
CONFIG_FILE = "probe.json"
SKIPPED_FILE = "skipped.json"  # in place of a probe the calibration could not train: why (a DVC output exists)


class ProbeError(InputError):
    """A probe that does not fit what it is asked to judge: other models, another step, broken files."""


class FeatureTap:
    """Forward hooks that keep, while capturing, the pooled outputs of the tapped blocks of the last forward.

    `blocks` names modules as "unet.<path>" or "controlnet.<path>"; a ModuleList is expanded to its children.
    Classifier-free guidance runs both branches in one batch (unconditional first): a sample's features are
    its two halves side by side, so a linear head can read the guidance direction too.
    """

    def __init__(self, components: GeneratorComponents, blocks: tuple[str, ...] = TAPPED, grid: int = 2) -> None:
        self.grid = grid
        self._outputs: dict[str, torch.Tensor] = {}
        self._capturing = False
        self._rows: list[int] | None = None
        self.seconds = 0.0  # spent pooling and gathering (exact on a CPU; an accelerator's kernels run async)
        self._handles = []
        for name, module in _modules(components, blocks):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        self.names = [name for name, _ in _modules(components, blocks)]

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def keep(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            if self._capturing:
                started = time.perf_counter()
                hidden = output[0] if isinstance(output, tuple) else output
                assert isinstance(hidden, torch.Tensor)
                if self._rows is not None:  # both guidance branches of the samples asked for, nothing else
                    half = hidden.shape[0] // 2
                    hidden = hidden[self._rows + [half + r for r in self._rows]]
                self._outputs[name] = F.adaptive_avg_pool2d(hidden.detach().float(), self.grid).flatten(1)
                self.seconds += time.perf_counter() - started

        return keep

    @contextmanager
    def capture(self, rows: Sequence[int] | None = None) -> Iterator[None]:
        """Keep the pooled outputs of the forward passes run inside (the last one wins), of the samples `rows`
        of the batch (None: all): the cost follows the slots that need features, not the batch."""
        self._outputs.clear()
        self._capturing, self._rows = True, None if rows is None else list(rows)
        try:
            yield
        finally:
            self._capturing = False

    def features(self) -> torch.Tensor:
        """rows x F: per sample, every tapped block's pooled output of both guidance branches, on the CPU."""
        missing = [n for n in self.names if n not in self._outputs]
        if missing:
            raise ProbeError(f"no captured output of {missing}: was a forward pass run inside capture()?")
        started = time.perf_counter()
        pooled = torch.cat([self._outputs[n] for n in self.names], dim=1)
        uncond, text = pooled.chunk(2)
        features = torch.cat([uncond, text], dim=1).cpu()
        self.seconds += time.perf_counter() - started
        return features

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _modules(components: GeneratorComponents, blocks: tuple[str, ...]) -> list[tuple[str, torch.nn.Module]]:
    roots = {"unet": components.unet, "controlnet": components.controlnet}
    found = []
    for block in blocks:
        root, _, path = block.partition(".")
        if root not in roots or not path:
            raise ProbeError(f"tapped block {block!r}: expected 'unet.<module>' or 'controlnet.<module>'")
        try:
            module = roots[root].get_submodule(path)
        except AttributeError as error:
            raise ProbeError(f"tapped block {block!r}: the {root} has no module {path!r}") from error
        if isinstance(module, torch.nn.ModuleList):
            found += [(f"{block}.{i}", child) for i, child in enumerate(module)]
        else:
            found.append((block, module))
    return found


@dataclass(frozen=True)
class ModelVersions:
    """What a probe belongs to: the folder hashes of the generator, the ControlNet it ran with, and the judge."""

    generator: str
    controlnet: str
    judge: str

    def describe(self) -> str:
        return ", ".join(f"{k} {v[:12]}" for k, v in asdict(self).items())


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-6, 1 - 1e-6))


@dataclass
class Head:
    """A logistic head at one step: standardised features -> p(accept); `both` weighs the head's logit and the
    x0 judge's logit (fitted on out-of-fold scores) for the check that uses both."""

    mean: torch.Tensor  # F
    std: torch.Tensor  # F
    weight: torch.Tensor  # F
    bias: torch.Tensor  # scalar
    both: torch.Tensor  # (w_probe, w_judge, bias)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.weight.shape[0]:
            raise ProbeError(f"features have {features.shape[1]} columns, the probe's head {self.weight.shape[0]}")
        z = (features.float() - self.mean) / self.std
        return torch.sigmoid(z @ self.weight + self.bias)

    def combine(self, p_probe: torch.Tensor, p_judge: torch.Tensor) -> torch.Tensor:
        w_probe, w_judge, bias = self.both.tolist()
        return torch.sigmoid(w_probe * logit(p_probe) + w_judge * logit(p_judge) + bias)


class Probe:
    """Heads at some steps of one schedule, for one generator and one judge, with the early check calibrated
    for them (`early`: by, step, threshold) when there was one."""

    def __init__(
        self,
        heads: dict[int, Head],
        blocks: tuple[str, ...],
        grid: int,
        schedule_steps: int,
        versions: ModelVersions | None,
        report: dict[str, object] | None = None,
    ) -> None:
        self.heads, self.blocks, self.grid = heads, blocks, grid
        self.schedule_steps, self.versions = schedule_steps, versions
        self.report: dict[str, object] = report or {}

    @property
    def steps(self) -> list[int]:
        return sorted(self.heads)

    def head(self, step: int) -> Head:
        if step not in self.heads:
            raise ProbeError(f"the probe has heads at steps {self.steps}, not at step {step}")
        return self.heads[step]

    def check(self, versions: ModelVersions, schedule_steps: int) -> None:
        """Refuse to judge for other models or another schedule: its heads learnt those activations only."""
        if versions != self.versions:
            trained = self.versions.describe() if self.versions else "models it did not record"
            raise ProbeError(
                f"the probe was trained for {trained}, not for {versions.describe()}: "
                "train it again for these models (rad evaluate-generation)"
            )
        if schedule_steps != self.schedule_steps:
            raise ProbeError(
                f"the probe was trained on a {self.schedule_steps}-step schedule, not a {schedule_steps}-step one"
            )

    def for_versions(self, versions: ModelVersions | None) -> Probe:
        """The same heads for models named otherwise that hold the same weights (a ControlNet copied with its
        training records): their activations are these."""
        return Probe(self.heads, self.blocks, self.grid, self.schedule_steps, versions, self.report)

    def save(self, folder: Path) -> None:
        if self.versions is None:
            raise ProbeError("a probe without the versions of its models cannot be saved: nothing could refuse it")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{step}.{name}": getattr(head, name) for step, head in self.heads.items() for name in HEAD_FIELDS}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
        meta = {
            "steps": self.steps,
            "blocks": list(self.blocks),
            "grid": self.grid,
            "schedule_steps": self.schedule_steps,
            "versions": asdict(self.versions),
            "report": self.report,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Probe:
        """Read a saved probe (no pickle); missing or unreadable files are named."""
        if (folder / SKIPPED_FILE).is_file():
            reason = json.loads((folder / SKIPPED_FILE).read_text()).get("skipped")
            raise ProbeError(f"{folder}: the evaluation trained no probe here ({reason})")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise ProbeError(f"{folder / name}: missing (a probe folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            meta = json.loads((folder / CONFIG_FILE).read_text())
            tensors = load_file(str(folder / WEIGHTS_FILE))
            heads = {
                int(step): Head(**{name: tensors[f"{step}.{name}"] for name in HEAD_FIELDS}) for step in meta["steps"]
            }
            return cls(
                heads,
                tuple(meta["blocks"]),
                int(meta["grid"]),
                int(meta["schedule_steps"]),
                ModelVersions(**meta["versions"]),
                meta.get("report"),
            )
        except (KeyError, TypeError, ValueError, SafetensorError) as error:
            raise ProbeError(f"{folder}: not a readable probe ({type(error).__name__}: {error})") from error


HEAD_FIELDS = ("mean", "std", "weight", "bias", "both")


def _logistic(x: NDArray[np.float64], y: NDArray[np.bool_], c: float, standardise: bool) -> tuple[Any, ...]:
    """(mean, std, model) of an L2-regularised logistic regression (inverse strength `c`)."""
    from sklearn.linear_model import LogisticRegression

    mean, std = (x.mean(0), x.std(0) + 1e-6) if standardise else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
    return mean, std, LogisticRegression(C=c, max_iter=5000).fit((x - mean) / std, y)


def _out_of_fold(x: NDArray[np.float64], y: NDArray[np.bool_], folds: int, c: float, standardise: bool) -> NDArray:
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        mean, std, model = _logistic(x[train], y[train], c, standardise)
        scores[test] = model.predict_proba((x[test] - mean) / std)[:, 1]
    return scores


def fit_head(
    features: NDArray[np.float32], accepted: NDArray[np.bool_], x0_scores: NDArray[np.float64], c: float, folds: int
) -> tuple[Head, NDArray[np.float64], NDArray[np.float64]]:
    """The head fitted on all rows, and the out-of-fold p(accept) of the head alone and of `both`: what
    calibration chooses thresholds on (scores of rows the head did not see). `c`: the logistic regression's
    inverse L2 strength on the standardised features (few hundred rows, thousands of features)."""
    x = features.astype(np.float64)
    probe_oof = _out_of_fold(x, accepted, folds, c, standardise=True)
    stacked = torch.stack([logit(torch.from_numpy(v)) for v in (probe_oof, x0_scores)], 1).numpy()
    both_oof = _out_of_fold(stacked, accepted, folds, 1.0, standardise=False)
    mean, std, full = _logistic(x, accepted, c, standardise=True)
    _, _, both = _logistic(stacked, accepted, 1.0, standardise=False)
    head = Head(
        torch.from_numpy(mean).float(),
        torch.from_numpy(std).float(),
        torch.from_numpy(full.coef_[0]).float(),
        torch.tensor(float(full.intercept_[0])),
        torch.tensor([*both.coef_[0].tolist(), float(both.intercept_[0])], dtype=torch.float32),
    )
    return head, probe_oof, both_oof
