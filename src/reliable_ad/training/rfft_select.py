"""Keep the RFFT snapshot that verdicts outside the loss like best, never the one the training judge likes best.

A run's last weights are those that pleased the training judge most, its blind spots included; a judge that
was optimised against cannot tell a better ControlNet from one that fools it. So every `select.every` steps
RFFT saves a snapshot, and here each snapshot (and the ControlNet the run started from, step 0) generates
first attempts for validation products that are neither training nor evaluation products. The snapshot with
the highest available rate by the selecting verdicts is kept (ties: the earliest, the least drifted):

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

from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.config import RecurrentConfig, SelectionConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import recurrent_generate
from reliable_ad.judge import Judge
from reliable_ad.labels import AVAILABLE
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


def select_snapshot(
    run: Path,
    generator: Path,
    start: Path | None,
    judge: Judge,
    pool: list[PromptConfig],
    recurrent: RecurrentConfig,
    cfg: SelectionConfig,
    progress: bool = True,
    selector: Judge | None = None,
) -> dict[str, Any]:
    """Score step 0 (`start`, or the generator's own ControlNet) and every snapshot of `run`, copy the chosen
    one to `run/controlnet` (its RFFT settings kept) and write the table to `run/selection.json`. With
    ``by: judge``, `selector` is that judge (loaded from `cfg.judge`)."""
    if cfg.by == "last":
        return {"by": "last", "chosen_step": None, "human_labels": 0, "table": []}
    found = snapshots(run)
    if not found:
        raise FileNotFoundError(f"{run / SNAPSHOTS}: no snapshots to choose from (select.every was 0?)")
    if cfg.by == "judge" and selector is None:
        raise ValueError(f"select.by is 'judge' but the selecting judge {cfg.judge} was not given")
    first = recurrent.model_copy(update={"max_attempts": 1, "early_reject": False})
    products = held_out_products(cfg.products, cfg.product_seed)
    candidates = [(0, start if start is not None else generator / "controlnet"), *found]
    table = []
    for step, folder in tqdm(candidates, desc="select snapshot", unit="snapshot", disable=not progress):
        denoiser = Denoiser.from_folders(generator, folder, first)
        stats = recurrent_generate(denoiser, judge, products, pool, first, keep_images=True, progress=False)
        attempts = stats.attempts
        judged = float(np.mean([a.status == "accepted" for a in attempts]))
        if selector is None:
            chosen_by = float(np.mean([a.reviewer_label == AVAILABLE for a in attempts]))
        else:
            images = [a.image for a in attempts if a.image is not None]
            verdict = selector(images, [p.rgba for p in products], [p.caption for p in products])
            chosen_by = float((verdict.p_available >= selector.threshold).float().mean())
        table.append(
            {"step": step, "selector_rate": chosen_by, "training_judge_rate": judged, "gap": judged - chosen_by}
        )
    best = max(table, key=lambda row: (row["selector_rate"], -row["step"]))
    chosen = dict(candidates)[best["step"]]
    kept = run / "controlnet"
    records = {f.name: f.read_text() for f in kept.glob("rfft_*.json")}  # how the run trained, kept with the choice
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(chosen, kept)
    for name, text in records.items():
        (kept / name).write_text(text)
    result = {
        "by": cfg.by if selector is None else f"judge {cfg.judge}",
        "products": len(products),
        "product_seed": cfg.product_seed,
        "chosen_step": best["step"],
        "human_labels": len(products) * len(candidates) if selector is None else 0,
        "table": table,
    }
    (run / SELECTION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
