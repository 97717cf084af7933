"""Keep the RFFT snapshot that verdicts outside the loss like best, never the one the training judge likes best.

A run's last weights are those that pleased the training judge most, its blind spots included; a judge that
was optimised against cannot tell a better ControlNet from one that fools it. So every `select.every` steps
RFFT saves a snapshot, and here each snapshot (and the ControlNet the run started from, step 0) generates
first attempts for validation products that are neither training nor evaluation products. Each snapshot is
compared with step 0 product by product (a paired bootstrap interval of the difference); among those whose
interval lies above 0 the one with the highest rate is kept (ties: the earliest, the least drifted), and step 0
when none is: a snapshot that merely ties or wins by noise does not replace the weights that were there. The
verdicts are:

- ``reviewer``: human labels of those images (the embedded world's reviewer); they are counted, since
  people's time is what the method sets out to save;
- ``judge``: another RFNet (another seed or data half), at its own threshold.

The training judge's rate is recorded beside it, so the table shows the hacking gap growing along the run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from reliable_ad.data.products import ProductSource
from reliable_ad.errors import InputError
from reliable_ad.generation.config import RecurrentConfig, SelectionConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import RunStats, recurrent_generate
from reliable_ad.judge import Judge
from reliable_ad.labels import AVAILABLE
from reliable_ad.models.generator import TRAINING_RECORDS
from reliable_ad.stats import paired_bootstrap
from reliable_ad.training.rfft import SNAPSHOTS

SELECTION_FILE = "selection.json"


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every snapshot a run saved, in step order."""
    folders = sorted((run / SNAPSHOTS).glob("step-*")) if (run / SNAPSHOTS).is_dir() else []
    return [(int(folder.name.removeprefix("step-")), folder) for folder in folders]


def last_snapshot(run: Path) -> Path | None:
    """The run's most tuned weights: what fooled its judge most (feedback rounds show them to people)."""
    found = snapshots(run)
    return found[-1][1] if found else None


def chosen_row(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Step 0's row (the first) unless a later candidate's paired interval against it lies above 0; then the
    highest rate among those (ties: the earliest)."""
    better = [row for row in table[1:] if row["delta_ci_low"] > 0]
    return max(better, key=lambda row: (row["selector_rate"], -row["step"])) if better else table[0]


def validation_run(
    generator: Path,
    controlnet: Path,
    judge: Judge,
    pool: list[PromptConfig],
    recurrent: RecurrentConfig,
    cfg: SelectionConfig,
    source: ProductSource,
) -> RunStats:
    """One candidate's first attempts on the validation products, images kept for the verdicts."""
    first = recurrent.model_copy(update={"max_attempts": 1, "early_reject": False})
    denoiser = Denoiser.from_folders(generator, controlnet, first)
    products = source.products(cfg.products, cfg.product_seed, "validation")
    return recurrent_generate(denoiser, judge, products, pool, first, keep_images=True, progress=False)


def select_snapshot(
    run: Path,
    generator: Path,
    start: Path | None,
    judge: Judge,
    pool: list[PromptConfig],
    recurrent: RecurrentConfig,
    cfg: SelectionConfig,
    source: ProductSource,
    progress: bool = True,
    selector: Judge | None = None,
    start_pool: list[PromptConfig] | None = None,
    candidates: list[tuple[int, Path]] | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    start_run: RunStats | None = None,
) -> dict[str, Any]:
    """Score step 0 (`start`, or the generator's own ControlNet, with `start_pool` if it generated with another
    pool) and every snapshot of `run` (or `candidates`), copy the chosen one to `run/controlnet` (its training
    records kept) and write the table to `run/selection.json`. With ``by: judge``, `selector` is that judge
    (loaded from `cfg.judge`). `start_run`: step 0's attempts made before by `validation_run` with the same
    start, pool, judge and settings (several methods from one start score it once)."""
    if cfg.by == "last":
        return {"by": "last", "chosen_step": None, "human_labels": 0, "table": []}
    found = snapshots(run) if candidates is None else candidates
    if not found:
        raise InputError(f"{run / SNAPSHOTS}: no snapshots to choose from (select.every was 0?)")
    if cfg.by == "judge" and selector is None:
        raise InputError(f"select.by is 'judge' but the selecting judge {cfg.judge} was not given")
    products = source.products(cfg.products, cfg.product_seed, "validation")
    everyone = [(0, start if start is not None else generator / "controlnet"), *found]
    table, verdicts = [], []
    for step, folder in tqdm(everyone, desc="select snapshot", unit="snapshot", disable=not progress):
        prompts = start_pool if step == 0 and start_pool is not None else pool
        known = start_run if step == 0 else None
        attempts = (known or validation_run(generator, folder, judge, prompts, recurrent, cfg, source)).attempts
        judged = float(np.mean([a.status == "accepted" for a in attempts]))
        if selector is None:
            good = np.array([a.reviewer_label == AVAILABLE for a in attempts], float)
        else:
            images = [a.image for a in attempts if a.image is not None]
            verdict = selector(images, [p.rgba for p in products], [p.caption for p in products])
            good = (verdict.p_available >= selector.threshold).float().numpy().astype(float)
        verdicts.append(good)
        paired = paired_bootstrap(good, verdicts[0], resamples=resamples, confidence=confidence, seed=step)
        table.append(
            {
                "step": step,
                "selector_rate": float(good.mean()),
                "training_judge_rate": judged,
                "gap": judged - float(good.mean()),
                "delta_vs_step_0": paired.delta,
                "delta_ci_low": paired.low,
                "delta_ci_high": paired.high,
            }
        )
    best = chosen_row(table)
    chosen = dict(everyone)[best["step"]]
    kept = run / "controlnet"
    records = {f.name: f.read_text() for pattern in TRAINING_RECORDS for f in kept.glob(pattern)}  # how the run trained
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(chosen, kept)
    for name, text in records.items():
        (kept / name).write_text(text)
    result = {
        "by": cfg.by if selector is None else f"judge {cfg.judge}",
        "rule": f"highest rate among candidates whose paired {confidence:.0%} interval vs step 0 is above 0",
        "products": len(products),
        "product_seed": cfg.product_seed,
        "chosen_step": best["step"],
        "human_labels": len(products) * len(everyone) if selector is None else 0,
        "table": table,
    }
    (run / SELECTION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
