"""Early scores: how likely the judge is to accept a slot's finished image, read part-way through denoising.

Three ways (`by`): the x0 judge (decode the x0 prediction, paste the product, judge it: a VAE decode and a judge
call per check), the probe (a logistic head on the denoiser's own pooled activations: no extra network call),
or both (the probe's and the x0 judge's logits weighed together). Early rejection stops a slot whose score is
below a threshold; particle steering resamples a product's particles by it.

The probe reads how the activations changed since the first step: the first step's activations carry the
product and prompt, which decide how hard a product is but not which of its seeds will pass; taking them out
raised the probe's out-of-fold ROC AUC at every step tried (480 first attempts: 0.75 -> 0.79 at step 4 of 20).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import torch

from reliable_ad.generation.denoise import Denoiser, Slot
from reliable_ad.generation.probe import FeatureTap, Probe, ProbeError
from reliable_ad.judge import Judge

By = Literal["x0_judge", "probe", "both"]
FIRST = 1  # the step whose activations the probe's features are taken relative to


def capture_advance(denoiser: Denoiser, tap: FeatureTap | None, slots: list[Slot], steps: set[int]) -> None:
    """One denoising step; with a tap, slots reaching the first step keep their pooled activations, and slots
    reaching one of `steps` keep the change since then as `extra["features"]`."""
    rows = [k for k, s in enumerate(slots) if s.step + 1 in steps | {FIRST}]
    if tap is None or not rows:
        denoiser.advance(slots)
        return
    with tap.capture(rows):
        denoiser.advance(slots)
    for k, features in zip(rows, tap.features(), strict=True):
        slot = slots[k]
        if slot.step == FIRST:
            slot.extra["first"] = features
        else:
            first = slot.extra["first"]
            assert isinstance(first, torch.Tensor)
            slot.extra["features"] = features - first


@torch.no_grad()
def x0_scores(denoiser: Denoiser, judge: Judge, slots: list[Slot]) -> torch.Tensor:
    """The judge's p(available) of each slot's x0 prediction, decoded with the product pasted back."""
    latents = torch.cat([s.x0 if s.x0 is not None else s.latents for s in slots])
    images = denoiser.images(latents, slots)
    return judge(images, [s.job.product for s in slots], [s.job.caption for s in slots]).p_available.cpu()


class Scorer:
    """The early score of slots at given steps. Its `advance` replaces the denoiser's, so a probe's activations
    are kept as the step runs; it also clocks the UNet steps and the checks (on a CPU, where the clock is exact:
    an accelerator's kernels run asynchronously, benchmarks/real_size.py times those with synchronisation)."""

    def __init__(self, denoiser: Denoiser, judge: Judge, by: By, probe: Probe | None, steps: Sequence[int]) -> None:
        lowest = FIRST if by == "x0_judge" else FIRST + 1  # the probe reads the change since the first step
        outside = [s for s in steps if not lowest <= s < denoiser.steps]
        if outside:
            raise ProbeError(
                f"{by} score steps {outside} lie outside the {denoiser.steps}-step schedule: they must be in "
                f"{lowest}..{denoiser.steps - 1}"
            )
        if by != "x0_judge":
            if probe is None:
                raise ProbeError(f"scores by {by!r} need a probe (rad evaluate-generation trains one)")
            if probe.schedule_steps != denoiser.steps:
                raise ProbeError(
                    f"the probe was trained on a {probe.schedule_steps}-step schedule, this one has {denoiser.steps}"
                )
            missing = sorted(set(steps) - set(probe.steps))
            if missing:
                raise ProbeError(f"the probe has heads at steps {probe.steps}, not at {missing}")
        self.denoiser, self.judge, self.by, self.probe = denoiser, judge, by, probe
        self.steps = set(steps)
        self.tap = FeatureTap(denoiser.c, probe.blocks, probe.grid) if probe is not None and by != "x0_judge" else None
        self.unet_seconds, self.unet_evals = 0.0, 0
        self.check_seconds, self.checks = 0.0, 0

    def advance(self, slots: list[Slot]) -> None:
        started = time.perf_counter()
        capture_advance(self.denoiser, self.tap, slots, self.steps)
        self.unet_seconds += time.perf_counter() - started
        self.unet_evals += len(slots)

    def scores(self, slots: list[Slot], step: int) -> torch.Tensor:
        """p(the judge accepts the finished image) of slots that have just done `step` steps."""
        started = time.perf_counter()
        p_judge = x0_scores(self.denoiser, self.judge, slots) if self.by != "probe" else None
        p = p_judge if self.probe is None or self.by == "x0_judge" else self._probe(slots, step, p_judge)
        assert p is not None
        self.check_seconds += time.perf_counter() - started
        self.checks += len(slots)
        return p

    def _probe(self, slots: list[Slot], step: int, p_judge: torch.Tensor | None) -> torch.Tensor:
        assert self.probe is not None
        head = self.probe.head(step)
        features = []
        for slot in slots:
            value = slot.extra.get("features")
            if not isinstance(value, torch.Tensor) or slot.step != step:
                raise ProbeError(f"slot {slot.job.key} (attempt {slot.job.attempt}) has no activations of step {step}")
            features.append(value)
        p_probe = head(torch.stack(features))
        return p_probe if p_judge is None else head.combine(p_probe, p_judge)

    def overhead(self) -> float:
        """A check's cost as a share of one UNet evaluation: the check itself plus, for the probe, the pooling in
        its hooks (taken out of the clocked UNet time)."""
        pooling = self.tap.seconds if self.tap is not None else 0.0
        if not self.checks or self.unet_evals == 0:
            return float("nan")
        per_eval = (self.unet_seconds - pooling) / self.unet_evals
        return (self.check_seconds + pooling) / self.checks / per_eval

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
