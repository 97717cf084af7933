"""Base versus fine-tuned generator, in one run: same products, same seeds, same judge, and the reviewer.

The hacking gap is the judge's first-attempt available rate minus the reviewer's on the same images: a
ControlNet tuned against the judge that raises the first and not the second has learnt to fool it.

Besides the available rates (and a paired bootstrap interval of their difference over products), a
quality guard catches the paper's failure mode, backgrounds collapsing into one simple look: the background
diversity of the tuned samples (mean pairwise distance of a colour-layout descriptor of everything but the
product) must stay above a share of the base's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.colour import to_lab
from reliable_ad.data.hashing import folder_hash
from reliable_ad.data.products import ProductSource
from reliable_ad.data.scene import dilate
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.guard import GuardConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import Attempt, RunStats, judge_on_generated, recurrent_generate, summarise
from reliable_ad.judge import Judge
from reliable_ad.stats import paired_bootstrap


def background_descriptor(image: NDArray[np.uint8], product: NDArray[np.uint8], grid: int) -> NDArray[np.float32]:
    """Mean Lab colour of each grid cell, product (and a thin halo) left out: the background's layout."""
    lab = to_lab(image)
    keep = ~dilate(product[..., 3] >= 128, 1)
    size = image.shape[0] // grid
    cells = []
    for row in range(grid):
        for col in range(grid):
            window = (slice(row * size, (row + 1) * size), slice(col * size, (col + 1) * size))
            mask = keep[window]
            values = lab[window][mask] if mask.any() else lab[window].reshape(-1, 3)
            cells.append(values.mean(axis=0))
    return np.concatenate(cells).astype(np.float32)


def diversity(features: NDArray[np.float32]) -> float:
    """Mean pairwise Euclidean distance."""
    if len(features) < 2:
        return 0.0
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    return float(distances[np.triu_indices(len(features), 1)].mean())


def quality_guard(
    base: NDArray[np.float32], tuned: NDArray[np.float32], guard: GuardConfig, same_prompts: bool = True
) -> dict[str, Any]:
    """The paper's failure mode is backgrounds collapsing into a few simple ones (diversity falls); a tuned model
    can also drift into something else entirely, noise included (each sample far from its base sample). With
    other prompts than the base's (a pool learnt from labels) a sample's base twin shows another scene, so the
    drift is measured to the nearest base sample instead: far from everything the base makes."""
    div_base, div_tuned = diversity(base), diversity(tuned)
    if same_prompts:
        shift = float(np.linalg.norm(base - tuned, axis=1).mean())
    else:
        shift = float(np.linalg.norm(tuned[:, None] - base[None], axis=-1).min(axis=1).mean())
    diverse = div_tuned >= guard.min_diversity_ratio * div_base
    close = shift <= guard.max_shift_ratio * div_base
    return {
        "diversity_base": div_base,
        "diversity_tuned": div_tuned,
        "base_tuned_distance": shift,
        "guard_diversity_ok": bool(diverse),
        "guard_shift_ok": bool(close),
        "guard_ok": bool(diverse and close),
    }


def _image(attempt: Attempt) -> NDArray[np.uint8]:
    if attempt.image is None:
        raise ValueError(f"attempt {attempt.product}/{attempt.attempt} kept no image")
    return attempt.image


def _first_attempts(attempts: list[Attempt]) -> dict[str, Attempt]:
    return {a.product: a for a in attempts if a.attempt == 1}


def compare_generators(
    base: Denoiser,
    tuned: Denoiser,
    judge: Judge,
    pool: Sequence[PromptConfig],
    cfg: GenerationEvalConfig,
    guard: GuardConfig,
    source: ProductSource,
    metrics_file: Path | None = None,
    grid_file: Path | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    key: str | None = None,
    tuned_pool: Sequence[PromptConfig] | None = None,
    known: Mapping[str, RunStats] | None = None,
    tuned_is_base: bool = False,
) -> dict[str, Any]:
    """Base and tuned on the same products and seeds; the deltas come with paired bootstrap intervals. The
    tuned side draws its prompts from `tuned_pool` when it has its own (one learnt from labels).

    `key` (see `comparison_key`) is stored with the metrics, so the registry gate can reuse them. `known`: sides
    made before by `evaluation_run` with the same denoiser, judge, pool and settings (every job is seeded, so
    they are what this run would make); `tuned_is_base`: the tuned side has the base's weights and pool (a
    selection that kept its start), so the base's run serves both.
    """
    products = source.products(cfg.products, cfg.product_seed, "test", cfg.categories)
    known = known or {}
    base_run = known.get("base") or evaluation_run(base, judge, pool, cfg, source)
    tuned_run = known.get("tuned") or (
        base_run if tuned_is_base else evaluation_run(tuned, judge, tuned_pool or pool, cfg, source)
    )
    runs = {"base": base_run, "tuned": tuned_run}
    first = {name: _first_attempts(stats.attempts) for name, stats in runs.items()}
    keys = [p.key for p in products]
    rgba = {p.key: p.rgba for p in products}
    features = {
        n: np.stack([background_descriptor(_image(first[n][k]), rgba[k], guard.grid) for k in keys]) for n in runs
    }
    summaries = {n: summarise(s, len(products), cfg.recurrent.max_attempts) for n, s in runs.items()}
    metrics: dict[str, Any] = {
        **paired_rates(first, keys, resamples, confidence, cfg.recurrent.seed),
        **quality_guard(features["base"], features["tuned"], guard, tuned_pool is None or tuned_pool == pool),
        # the judge on every attempt of both runs: a tuned ControlNet that fools it shows here as well
        **judge_on_generated([a for stats in runs.values() for a in stats.attempts]),
        "mean_attempts_base": summaries["base"]["mean_attempts"],
        "mean_attempts_tuned": summaries["tuned"]["mean_attempts"],
        "attempts_per_available_base": summaries["base"]["attempts_per_reviewer_available_accept"],
        "attempts_per_available_tuned": summaries["tuned"]["attempts_per_reviewer_available_accept"],
        "abandoned_share_base": summaries["base"]["abandoned_share"],
        "abandoned_share_tuned": summaries["tuned"]["abandoned_share"],
        "attempts_total_base": summaries["base"]["attempts_total"],
        "attempts_total_tuned": summaries["tuned"]["attempts_total"],
    }
    if key is not None:
        metrics["comparison_key"] = key
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    if grid_file is not None:
        _grid(first, keys[:16], grid_file)
    return metrics


def evaluation_run(
    denoiser: Denoiser, judge: Judge, pool: Sequence[PromptConfig], cfg: GenerationEvalConfig, source: ProductSource
) -> RunStats:
    """One side of a comparison: recurrent generation on the evaluation's products, no early rejection, the
    images kept."""
    rc = cfg.recurrent.model_copy(update={"early_reject": False})
    products = source.products(cfg.products, cfg.product_seed, "test", cfg.categories)
    return recurrent_generate(denoiser, judge, products, pool, rc, keep_images=True)


def paired_rates(
    first: dict[str, dict[str, Attempt]], keys: list[str], resamples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """First-attempt available rates of base and tuned by the reviewer and by the judge, their paired
    differences with bootstrap intervals, and each side's hacking gap (the judge's rate minus the reviewer's
    on the same images: how far the judge is being fooled). Images nobody has labelled yet (a catalog's) make
    the reviewer's figures NaN, never a rate of 0."""

    def verdict(label: str | None) -> float:
        return float("nan") if label is None else float(label == "available")

    reviewer = {n: np.array([verdict(first[n][k].reviewer_label) for k in keys]) for n in first}
    rfnet = {n: np.array([first[n][k].status == "accepted" for k in keys], float) for n in first}
    delta, delta_rfnet = (
        paired_bootstrap(scores["tuned"], scores["base"], resamples=resamples, confidence=confidence, seed=seed)
        for scores in (reviewer, rfnet)
    )
    return {
        "products": len(keys),
        "available_rate_first_reviewer_base": float(reviewer["base"].mean()),
        "available_rate_first_reviewer_tuned": float(reviewer["tuned"].mean()),
        "delta": delta.delta,
        "delta_ci_low": delta.low,
        "delta_ci_high": delta.high,
        "available_rate_first_rfnet_base": float(rfnet["base"].mean()),
        "available_rate_first_rfnet_tuned": float(rfnet["tuned"].mean()),
        "delta_rfnet": delta_rfnet.delta,
        "delta_rfnet_ci_low": delta_rfnet.low,
        "delta_rfnet_ci_high": delta_rfnet.high,
        "hacking_gap_base": float(rfnet["base"].mean() - reviewer["base"].mean()),
        "hacking_gap_tuned": float(rfnet["tuned"].mean() - reviewer["tuned"].mean()),
    }


def first_attempt_comparison(
    base: Denoiser,
    tuned: Denoiser,
    judge: Judge,
    pool: Sequence[PromptConfig],
    products: int,
    product_seed: int,
    recurrent: RecurrentConfig,
    source: ProductSource,
    resamples: int = 2000,
    confidence: float = 0.95,
    tuned_pool: Sequence[PromptConfig] | None = None,
    known: Mapping[str, RunStats] | None = None,
    tuned_is_base: bool = False,
) -> dict[str, Any]:
    """Base and tuned first attempts only (cheaper than `compare_generators`), e.g. on products of another seed
    to see whether a gain holds beyond the evaluation set. `known` and `tuned_is_base` as `compare_generators`'
    (sides made by `first_attempts_run`)."""
    known = known or {}
    base_run = known.get("base") or first_attempts_run(base, judge, pool, products, product_seed, recurrent, source)
    tuned_run = known.get("tuned") or (
        base_run
        if tuned_is_base
        else first_attempts_run(tuned, judge, tuned_pool or pool, products, product_seed, recurrent, source)
    )
    first = {name: _first_attempts(stats.attempts) for name, stats in (("base", base_run), ("tuned", tuned_run))}
    keys = [p.key for p in source.products(products, product_seed, "test")]
    return {"product_seed": product_seed, **paired_rates(first, keys, resamples, confidence, recurrent.seed)}


def first_attempts_run(
    denoiser: Denoiser,
    judge: Judge,
    pool: Sequence[PromptConfig],
    products: int,
    product_seed: int,
    recurrent: RecurrentConfig,
    source: ProductSource,
) -> RunStats:
    """One side of `first_attempt_comparison`: a first attempt for each of `products` products of `product_seed`."""
    rc = recurrent.model_copy(update={"max_attempts": 1, "early_reject": False})
    items = source.products(products, product_seed, "test")
    return recurrent_generate(denoiser, judge, items, pool, rc, progress=False)


# the evaluation settings a comparison uses (early-rejection calibration plays no part in it); dvc.yaml's
# evaluate_rfft stage lists the same keys
COMPARED = {"products", "product_seed", "categories", "recurrent"}


def comparison_key(
    generator: Path,
    controlnet: Path,
    judge: Path,
    cfg: GenerationEvalConfig,
    guard: GuardConfig,
    resamples: int,
    confidence: float,
    products: str,
) -> str:
    """What a base-vs-tuned comparison depends on: every file of the generator, the tuned ControlNet and the
    judge, the products' source (`ProductSource.version`) and the settings. Two comparisons with the same key
    have the same result (every job is seeded)."""
    digest = hashlib.sha256(products.encode())
    for folder in (generator, controlnet, judge):
        digest.update(folder_hash(folder).encode())
    settings = {"eval": cfg.model_dump(mode="json", include=COMPARED), "guard": guard.model_dump(mode="json")}
    digest.update(json.dumps({**settings, "resamples": resamples, "confidence": confidence}, sort_keys=True).encode())
    return digest.hexdigest()


def _grid(first: dict[str, dict[str, Attempt]], keys: list[str], path: Path) -> None:
    """Two rows per eight products: base above, tuned below (first attempts, same seeds)."""
    from PIL import Image

    rows = []
    for start in range(0, len(keys), 8):
        chunk = keys[start : start + 8]
        for name in ("base", "tuned"):
            rows.append(np.concatenate([_image(first[name][k]) for k in chunk], axis=1))
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded, axis=0)).resize(
        (width * 2, sum(r.shape[0] for r in padded) * 2), Image.Resampling.NEAREST
    ).save(path)
