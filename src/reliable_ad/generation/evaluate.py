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
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from reliable_ad.data.products import Product, ProductSource
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.cost import Candidate, cost_metrics, scheduler_runs
from reliable_ad.generation.denoise import Denoiser, Slot
from reliable_ad.generation.early import Calibration, first_attempts
from reliable_ad.generation.probe import SKIPPED_FILE, ModelVersions
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import (
    RunStats,
    cumulative_by_attempt,
    judge_on_generated,
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

    def keep(slots: list[Slot]) -> None:
        if slots[0].step in previews:
            previews[slots[0].step] += denoiser.images(torch.cat([s.x0 for s in slots if s.x0 is not None]), slots)

    return previews, first_attempts(denoiser, judge, products, pool, rc, denoiser.advance, keep)


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
    source: ProductSource,
    metrics_file: Path,
    plots_dir: Path,
    records_file: Path,
    versions: ModelVersions | None = None,
    probes: Path | None = None,
    tuned: Candidate | None = None,
    tuned_is_base: bool = False,
) -> dict[str, Any]:
    """The schedulers side by side under `denoiser` and, if given, the `tuned` generator (runs prefixed "rfft_");
    each generator's probe is trained on the calibration products and, with `probes`, saved in probes/base and
    probes/rfft with the `versions` it belongs to. `tuned_is_base`: the tuned generator has the base's weights
    (RFFT's selection kept its start), so the base's runs and probe are its own (the probe saved under its
    versions) instead of the same images made again."""
    rc = cfg.recurrent
    products = source.products(cfg.products, cfg.product_seed, "test", cfg.categories)
    calibration = source.products(cfg.calibration_products, cfg.product_seed, "test", cfg.categories, cfg.products)
    runs, calibrated = scheduler_runs(Candidate("", denoiser, versions), judge, products, calibration, pool, cfg)
    plain = runs["plain"]
    runs["whole_batch"] = whole_batch_generate(denoiser, judge, products, pool, rc)
    calibrations = {"base": calibrated}
    if tuned is not None and tuned_is_base:
        probe = calibrated.probe.for_versions(tuned.versions) if calibrated.probe is not None else None
        calibrations["rfft"] = replace(calibrated, probe=probe)
        runs |= {f"{tuned.name}{name}": stats for name, stats in runs.items() if name != "whole_batch"}
    elif tuned is not None:
        tuned_runs, calibrations["rfft"] = scheduler_runs(tuned, judge, products, calibration, pool, cfg)
        runs |= {f"{tuned.name}{name}": stats for name, stats in tuned_runs.items()}
    for name, found in calibrations.items():
        if probes is None:
            continue
        shutil.rmtree(probes / name, ignore_errors=True)  # no probe of earlier models stays beside a new one
        if found.probe is not None:
            found.probe.save(probes / name)
        else:
            (probes / name).mkdir(parents=True)
            (probes / name / SKIPPED_FILE).write_text(json.dumps({"skipped": found.probe_skipped}) + "\n")
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
        "early_rejection": calibrated.chosen
        or {"skipped": "no (step, threshold) keeps the false-abort budget with any accepted calibration image"},
        "early_rejection_by": {by: row or "none in the false-abort budget" for by, row in calibrated.by_mode.items()},
        "probe": {
            name: found.probe.report if found.probe is not None else {"skipped": found.probe_skipped}
            for name, found in calibrations.items()
        },
        "probe_overhead_share": _probe_overhead(cfg, calibrated, summaries),
        **cost_metrics(summaries),
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
    _plots(runs, len(products), rc.max_attempts, calibrated.table, plots_dir)
    return metrics


def _probe_overhead(
    cfg: GenerationEvalConfig, calibrated: Calibration, summaries: dict[str, dict[str, float]]
) -> float:
    """A probe check's cost as a share of a UNet evaluation, from the base run that scored by the probe alone."""
    if "steering" in summaries and cfg.steering.score == "probe":
        return summaries["steering"]["check_overhead"]
    if "early" in summaries and calibrated.chosen is not None and calibrated.chosen["by"] == "probe":
        return summaries["early"]["check_overhead"]
    return float("nan")


def _write_records(runs: dict[str, RunStats], path: Path) -> None:
    rows = [{"run": name, **a.row()} for name, stats in runs.items() for a in stats.attempts]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def _plots(
    runs: dict[str, RunStats], products: int, max_attempts: int, calibration: list[dict[str, Any]], folder: Path
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
    for by, step in sorted({(row["by"], row["step"]) for row in calibration}):
        rows = [r for r in calibration if (r["by"], r["step"]) == (by, step)]
        axes[1].plot(
            [r["false_abort_rate"] for r in rows],
            [r["steps_per_accept"] for r in rows],
            marker=".",
            label=f"{by} at step {step}",
        )
    axes[1].set(xlabel="false-abort rate", ylabel="UNet steps per accepted image", title="early rejection calibration")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "generation_curves.png", dpi=100)
    plt.close(fig)
    (folder / "cumulative_available.json").write_text(json.dumps(curves) + "\n")
    (folder / "early_rejection_calibration.json").write_text(json.dumps(calibration) + "\n")
