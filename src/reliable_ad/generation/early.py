"""Calibration of the early checks: first attempts of products the evaluation does not use are run to the end
once, keeping the early scores at the candidate steps (the x0 judge's, and the activations the probe reads) and
the judge's final verdict (labels that cost no human). The probe's heads are trained on them, and the
(by, step, threshold) that saves the most UNet evaluations per accept within the false-abort budget is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser, Slot
from reliable_ad.generation.probe import TAPPED, FeatureTap, ModelVersions, Probe, fit_head
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import Product, acceptance_threshold, job_for
from reliable_ad.generation.scores import FIRST, capture_advance, x0_scores
from reliable_ad.judge import Judge


@dataclass
class CalibrationData:
    """First attempts run to the end once: scores at the candidate steps and the judge's final verdict."""

    features: dict[int, torch.Tensor]  # step -> attempts x F: the change of pooled activations since step 1
    x0_scores: dict[int, torch.Tensor]  # step -> attempts: the judge's p(available) of the x0 preview
    accepted: NDArray[np.bool_]


@torch.no_grad()
def first_attempts(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    rc: RecurrentConfig,
    advance: Callable[[list[Slot]], None],
    after_step: Callable[[list[Slot]], None],
) -> NDArray[np.bool_]:
    """Each product's first attempt run to the end in batches (`advance` steps a batch, `after_step` sees it after
    each step); returns whether the judge accepts each final image."""
    tau = acceptance_threshold(rc, judge)
    accepted: list[bool] = []
    for start in tqdm(range(0, len(products), rc.batch_size), desc="first attempts", unit="batch"):
        chunk = range(start, min(len(products), start + rc.batch_size))
        slots = [denoiser.start(job_for(products[i], i, 1, pool, rc)) for i in chunk]
        while not denoiser.done(slots[0]):
            advance(slots)
            after_step(slots)
        images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
        out = judge(images, [s.job.product for s in slots], [s.job.caption for s in slots])
        accepted += [p >= tau for p in out.p_available.tolist()]
    return np.array(accepted)


def calibration_pass(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    rc: RecurrentConfig,
    steps: Sequence[int],
    tap: FeatureTap | None,
) -> CalibrationData:
    features: dict[int, list[torch.Tensor]] = {s: [] for s in steps if s > FIRST}
    previews: dict[int, list[torch.Tensor]] = {s: [] for s in steps}

    def keep(slots: list[Slot]) -> None:
        step = slots[0].step
        if step in previews:
            previews[step].append(x0_scores(denoiser, judge, slots))
        if tap is not None and step in features:
            features[step].append(torch.stack([s.extra["features"] for s in slots]))  # type: ignore[misc]

    def advance(slots: list[Slot]) -> None:
        capture_advance(denoiser, tap, slots, set(steps))

    accepted = first_attempts(denoiser, judge, products, pool, rc, advance, keep)
    return CalibrationData(
        {s: torch.cat(v) for s, v in features.items() if v},
        {s: torch.cat(v) for s, v in previews.items()},
        accepted,
    )


def cheapest_check(
    by: str, scores: dict[int, NDArray[np.float64]], accepted: NDArray[np.bool_], cfg: GenerationEvalConfig
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The (step, threshold) with the fewest UNet steps per accept whose aborts lose at most `max_false_abort`
    of the accepts, and every candidate's row."""
    table: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for step, p in scores.items():
        for threshold in cfg.probe_thresholds:
            abort = p < threshold
            false_abort = float((abort & accepted).sum() / max(1, accepted.sum()))
            cost = float(np.where(abort, step, cfg.recurrent.steps).mean())  # aborted attempts stop at `step`
            kept = float((accepted & ~abort).mean())
            per_accept = cost / kept if kept > 0 else float("nan")
            row: dict[str, Any] = {
                "by": by,
                "step": step,
                "threshold": threshold,
                "abort_rate": float(abort.mean()),
                "false_abort_rate": false_abort,
                "steps_per_attempt": cost,
                "steps_per_accept": per_accept,
            }
            table.append(row)
            cheaper = best is None or per_accept < best["steps_per_accept"]
            if false_abort <= cfg.max_false_abort and math.isfinite(per_accept) and cheaper:
                best = row
    return best, table


@dataclass
class Calibration:
    chosen: dict[str, Any] | None  # the cheapest check over the modes tried, None if none keeps the budget
    by_mode: dict[str, dict[str, Any] | None]
    table: list[dict[str, Any]]
    probe: Probe | None
    probe_skipped: str | None = None  # why no probe was trained


def calibrate(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: GenerationEvalConfig,
    versions: ModelVersions | None,
) -> Calibration:
    """Run first attempts once, train the probe on them, choose the cheapest early check of `cfg.early_by`."""
    rc = cfg.recurrent
    wants_probe = any(by != "x0_judge" for by in cfg.early_by) or cfg.steering.score != "x0_judge"
    tap = FeatureTap(denoiser.c, TAPPED, cfg.probe_grid) if wants_probe else None
    steering = cfg.steering.steps(rc.steps) if cfg.steers else []
    steps = sorted(set(cfg.probe_steps) | set(steering))  # the early check's candidates and steering's points
    try:
        data = calibration_pass(denoiser, judge, products, pool, rc, steps, tap)
    finally:
        if tap is not None:
            tap.close()
    accepted = data.accepted
    scores: dict[str, dict[int, NDArray[np.float64]]] = {"x0_judge": {s: v.numpy() for s, v in data.x0_scores.items()}}
    probe, skipped = None, None
    folds = min(cfg.probe_folds, int(accepted.sum()), int((~accepted).sum()))
    if tap is not None and folds < 2:
        skipped = f"{int(accepted.sum())} accepted and {int((~accepted).sum())} rejected first attempts: too few"
    elif tap is not None:
        heads, report = {}, {}
        scores["probe"], scores["both"] = {}, {}
        for step, features in data.features.items():
            x0 = scores["x0_judge"][step]
            heads[step], scores["probe"][step], scores["both"][step] = fit_head(
                features.numpy(), accepted, x0, cfg.probe_c, folds
            )
            report[step] = {by: _auc(accepted, scores[by][step]) for by in ("x0_judge", "probe", "both")}
        probe = Probe(heads, TAPPED, cfg.probe_grid, rc.steps, versions, {"out_of_fold_auc": report})
    by_mode: dict[str, dict[str, Any] | None] = {}
    table: list[dict[str, Any]] = []
    for by in cfg.early_by:
        if by in scores:
            candidates = {step: v for step, v in scores[by].items() if step in cfg.probe_steps}
            by_mode[by], rows = cheapest_check(by, candidates, accepted, cfg)
            table += rows
    found = [row for row in by_mode.values() if row is not None]
    chosen = min(found, key=lambda row: row["steps_per_accept"]) if found else None
    if probe is not None:
        probe.report |= {"early": chosen, "attempts": len(accepted), "accepted": int(accepted.sum())}
    return Calibration(chosen, by_mode, table, probe, skipped)


def _auc(truth: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores)) if truth.any() and not truth.all() else float("nan")
