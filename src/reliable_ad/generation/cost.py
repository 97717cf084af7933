"""Cost per usable image: what production pays (UNet evaluations, wall time) per accepted image that the human
(the embedded world's reviewer) calls available, for plain recurrent generation, early rejection and particle
steering, under each generator (the base ControlNet and the RFFT one), on the same products and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reliable_ad.generation.config import GenerationEvalConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.early import Calibration, calibrate
from reliable_ad.generation.probe import ModelVersions
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import Product, RunStats, recurrent_generate
from reliable_ad.generation.steering import steer_generate
from reliable_ad.judge import Judge

SCHEDULERS = ("plain", "early", "steering")


@dataclass
class Candidate:
    """A generator under evaluation: `name` prefixes its runs ("" for the base, "rfft_" for the tuned one)."""

    name: str
    denoiser: Denoiser
    versions: ModelVersions | None  # None: its probe stays in memory (it could not be refused under other models)


def scheduler_runs(
    candidate: Candidate,
    judge: Judge,
    products: Sequence[Product],
    calibration: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: GenerationEvalConfig,
) -> tuple[dict[str, RunStats], Calibration]:
    """Calibrate the early checks and train the probe on `calibration`, then run plain recurrent generation, early
    rejection (the cheapest check found, if any keeps the false-abort budget) and steering on `products`."""
    denoiser, rc = candidate.denoiser, cfg.recurrent
    calibrated = calibrate(denoiser, judge, calibration, pool, cfg, candidate.versions)
    runs = {"plain": recurrent_generate(denoiser, judge, products, pool, rc.model_copy(update={"early_reject": False}))}
    chosen = calibrated.chosen
    if chosen is not None:
        check = {"early_reject": True, "early_step": chosen["step"], "early_threshold": chosen["threshold"]}
        early_cfg = rc.model_copy(update=check | {"early_by": chosen["by"]})
        runs["early"] = recurrent_generate(denoiser, judge, products, pool, early_cfg, probe=calibrated.probe)
    if cfg.steers and (cfg.steering.score == "x0_judge" or calibrated.probe is not None):
        runs["steering"] = steer_generate(denoiser, judge, products, pool, rc, cfg.steering, calibrated.probe)
    return runs, calibrated


def cost_metrics(summaries: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Flat figures (MLflow logs top-level numbers) and the table the report shows: per generator and scheduler,
    UNet evaluations and seconds per usable image; the targets' ratios. A run that did not happen is NaN."""
    nan = float("nan")
    table: dict[str, dict[str, dict[str, float]]] = {}
    flat: dict[str, Any] = {}
    for prefix, generator in (("", "base"), ("rfft_", "rfft")):
        for scheduler in SCHEDULERS:
            run = summaries.get(prefix + scheduler)
            if run is None:
                continue
            row = {
                k: run[k]
                for k in (
                    "unet_evals_per_usable",
                    "seconds_per_usable",
                    "usable_images",
                    "reviewer_agrees_with_accepts",
                )
            }
            table.setdefault(generator, {})[scheduler] = row
            flat[f"unet_evals_per_usable_{generator}_{scheduler}"] = row["unet_evals_per_usable"]
            flat[f"seconds_per_usable_{generator}_{scheduler}"] = row["seconds_per_usable"]
    base = table.get("base", {})
    plain = base.get("plain", {}).get("unet_evals_per_usable", nan)
    steering = base.get("steering", {})
    tuned = {k: v["unet_evals_per_usable"] for k, v in table.get("rfft", {}).items()}
    finite = {k: v for k, v in tuned.items() if math.isfinite(v)}
    best = min(finite, key=lambda k: finite[k]) if finite else None
    precision = (  # the reviewer's share of available among the accepts: steering's minus plain's
        steering.get("reviewer_agrees_with_accepts", nan)
        - base.get("plain", {}).get("reviewer_agrees_with_accepts", nan)
    )
    return {
        **flat,
        "usable_per_unet_eval_ratio_steering_vs_plain": _ratio(plain, steering.get("unet_evals_per_usable", nan)),
        "reviewer_precision_steering_minus_plain": precision,
        "unet_evals_per_usable_ratio_rfft_best_vs_base_plain": _ratio(finite[best], plain) if best else nan,
        "rfft_best_scheduler": best,
        "cost_per_usable_image": table,
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if math.isfinite(denominator) and denominator > 0 else float("nan")
