"""Evaluate a generator under one fixed judge: plain recurrent generation, early rejection and the
whole-batch loop side by side on the same held-out products and seeds.

Early rejection is calibrated first on separate products: the x0 prediction is judged at a few candidate
steps, and the (step, threshold) pair that saves the most UNet evaluations while aborting at most
`max_false_abort` of the attempts that would have been accepted is chosen. In the evaluation itself, the
false-abort rate is measured exactly: every job is deterministic, so the plain run says what each aborted
attempt would have become.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from reliable_ad.data.synth.products import Product, held_out_products
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import (
    RunStats,
    acceptance_threshold,
    cumulative_by_attempt,
    job_for,
    judge_on_generated,
    recurrent_generate,
    summarise,
    whole_batch_generate,
)
from reliable_ad.judge import Judge


@torch.no_grad()
def first_attempt_previews(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    rc: RecurrentConfig,
    steps: Sequence[int],
) -> tuple[dict[int, list[NDArray[np.uint8]]], NDArray[np.bool_]]:
    """Each product's first attempt run to the end: its x0 previews at `steps` (decoded, product pasted) and
    whether the judge accepts the final image."""
    previews: dict[int, list[NDArray[np.uint8]]] = {s: [] for s in steps}
    tau = acceptance_threshold(rc, judge)
    accepted: list[bool] = []
    for start in tqdm(range(0, len(products), rc.batch_size), desc="first attempts", unit="batch"):
        chunk = range(start, min(len(products), start + rc.batch_size))
        slots = [denoiser.start(job_for(products[i], i, 1, pool, rc)) for i in chunk]
        while not denoiser.done(slots[0]):
            denoiser.advance(slots)
            if slots[0].step in previews:
                previews[slots[0].step] += denoiser.images(torch.cat([s.x0 for s in slots if s.x0 is not None]), slots)
        images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
        out = judge(images, [s.job.product for s in slots], [s.job.caption for s in slots])
        accepted += [p >= tau for p in out.p_available.tolist()]
    return previews, np.array(accepted)


def calibrate_early_rejection(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: GenerationEvalConfig,
) -> dict[str, Any]:
    """Judge x0 at the probe steps of first attempts, then pick the cheapest (step, threshold) in budget."""
    rc = cfg.recurrent
    steps = [s for s in cfg.probe_steps if s < rc.steps]
    previews, accepted = first_attempt_previews(denoiser, judge, products, pool, rc, steps)
    rgba, captions = [p.rgba for p in products], [p.caption for p in products]
    probes = {step: judge(images, rgba, captions).p_available.tolist() for step, images in previews.items()}
    table, best = [], None
    for step, scores in probes.items():
        p = np.array(scores)
        for threshold in cfg.probe_thresholds:
            abort = p < threshold
            false_abort = float((abort & accepted).sum() / max(1, accepted.sum()))
            # expected slot-steps per attempt: aborted ones stop at `step`
            cost = float(np.where(abort, step, rc.steps).mean())
            kept_accepts = float((accepted & ~abort).mean())
            row = {
                "step": step,
                "threshold": threshold,
                "abort_rate": float(abort.mean()),
                "false_abort_rate": false_abort,
                "steps_per_attempt": cost,
                "steps_per_accept": _ratio(cost, kept_accepts),
            }
            table.append(row)
            cheaper = best is None or row["steps_per_accept"] < best["steps_per_accept"]
            if false_abort <= cfg.max_false_abort and math.isfinite(row["steps_per_accept"]) and cheaper:
                best = row
    return {"chosen": best, "table": table, "attempts": len(accepted), "accept_rate": float(accepted.mean())}


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or NaN (undefined, like the other per-accept figures) when nothing was accepted."""
    return numerator / denominator if denominator > 0 else float("nan")


def false_abort_rate(early: RunStats, plain: RunStats) -> float:
    """Share of early-aborted attempts that the plain run (same job, same seed) accepted."""
    accepted = {(a.product, a.attempt) for a in plain.attempts if a.status == "accepted"}
    aborted = [(a.product, a.attempt) for a in early.attempts if a.status == "aborted"]
    return sum(1 for key in aborted if key in accepted) / max(1, len(aborted))


def evaluate_generation(
    denoiser: Denoiser,
    judge: Judge,
    pool: Sequence[PromptConfig],
    cfg: GenerationEvalConfig,
    metrics_file: Path,
    plots_dir: Path,
    records_file: Path,
) -> dict[str, Any]:
    rc = cfg.recurrent
    products = held_out_products(cfg.products, cfg.product_seed, cfg.categories)
    calibration = held_out_products(cfg.calibration_products, cfg.product_seed, cfg.categories, offset=cfg.products)
    calibrated = calibrate_early_rejection(denoiser, judge, calibration, pool, cfg)
    plain = recurrent_generate(denoiser, judge, products, pool, rc.model_copy(update={"early_reject": False}))
    runs = {"plain": plain}
    if calibrated["chosen"] is not None:
        early_cfg = rc.model_copy(
            update={
                "early_reject": True,
                "early_step": calibrated["chosen"]["step"],
                "early_threshold": calibrated["chosen"]["threshold"],
            }
        )
        runs["early"] = recurrent_generate(denoiser, judge, products, pool, early_cfg)
    runs["whole_batch"] = whole_batch_generate(denoiser, judge, products, pool, rc)
    summaries = {name: summarise(stats, len(products), rc.max_attempts) for name, stats in runs.items()}
    base = summaries["plain"]
    metrics: dict[str, Any] = {
        **{
            k: base[k]
            for k in (
                "available_rate_first_rfnet",
                "available_rate_first_reviewer",
                "mean_attempts",
                "unet_evals_per_accept",
                "abandoned_share",
                "seconds_per_accept",
            )
        },
        "accepts_per_min_ratio_refill_vs_whole_batch": _ratio(
            base["accepts_per_min"], summaries["whole_batch"]["accepts_per_min"]
        ),
        # on a GPU below saturation a batched call costs the same full or not: this is the refill speed-up there
        "accepts_per_call_ratio_refill_vs_whole_batch": _ratio(
            base["accepts_per_unet_call"], summaries["whole_batch"]["accepts_per_unet_call"]
        ),
        **judge_on_generated(plain.attempts),
        "final_available_rate_rfnet": 1.0 - base["abandoned_share"],
        "final_reviewer_agrees_with_accepts": base["reviewer_agrees_with_accepts"],
        "early_rejection": calibrated["chosen"]
        or {"skipped": "no (step, threshold) keeps the false-abort budget with any accepted calibration image"},
        "runs": summaries,
    }
    # without a calibrated early check the early figures are NaN (the reason is under "early_rejection"), so
    # generation.json always has the same keys
    early = summaries.get("early")
    metrics["unet_evals_ratio_early_vs_plain"] = (
        _ratio(early["unet_evals_per_accept"], base["unet_evals_per_accept"]) if early else float("nan")
    )
    metrics["final_available_rate_early"] = 1.0 - early["abandoned_share"] if early else float("nan")
    metrics["false_abort_rate"] = false_abort_rate(runs["early"], plain) if early else float("nan")
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    _write_records(runs, records_file)
    _plots(runs, len(products), rc.max_attempts, calibrated, plots_dir)
    return metrics


def _write_records(runs: dict[str, RunStats], path: Path) -> None:
    rows = [{"run": name, **a.row()} for name, stats in runs.items() for a in stats.attempts]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def _plots(
    runs: dict[str, RunStats], products: int, max_attempts: int, calibrated: dict[str, Any], folder: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    curves = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    attempts = range(1, max_attempts + 1)
    for name, stats in runs.items():
        curve = cumulative_by_attempt(stats, products, max_attempts)
        reviewed = cumulative_by_attempt(stats, products, max_attempts, reviewer=True)
        curves += [
            {"run": name, "attempt": k, "available_rate": v, "available_rate_reviewer": r}
            for k, v, r in zip(attempts, curve, reviewed, strict=True)
        ]
        (line,) = axes[0].plot(attempts, curve, marker="o", label=f"{name}: accepted by the judge")
        if any(a.reviewer_label is not None for a in stats.attempts):
            axes[0].plot(
                attempts, reviewed, "--", marker=".", color=line.get_color(), label=f"{name}: and by the reviewer"
            )
    axes[0].set(
        xlabel="attempts",
        ylabel="products with an accepted image",
        ylim=(0, 1.02),
        title="cumulative available rate",
    )
    axes[0].legend()
    for step in sorted({row["step"] for row in calibrated["table"]}):
        rows = [r for r in calibrated["table"] if r["step"] == step]
        axes[1].plot(
            [r["false_abort_rate"] for r in rows],
            [r["steps_per_accept"] for r in rows],
            marker=".",
            label=f"check at step {step}",
        )
    axes[1].set(xlabel="false-abort rate", ylabel="UNet steps per accepted image", title="early rejection calibration")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "generation_curves.png", dpi=100)
    plt.close(fig)
    (folder / "cumulative_available.json").write_text(json.dumps(curves) + "\n")
    (folder / "early_rejection_calibration.json").write_text(json.dumps(calibrated["table"]) + "\n")
