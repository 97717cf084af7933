"""Statistics shared by evaluation and promotion gates: calibration and paired bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def expected_calibration_error(
    confidence: NDArray[np.floating], correct: NDArray[np.bool_], bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE with equal-width confidence bins, and the per-bin table of a reliability diagram."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        accuracy, mean_conf, share = (
            float(correct[inside].mean()),
            float(confidence[inside].mean()),
            float(inside.mean()),
        )
        ece += share * abs(accuracy - mean_conf)
        table.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "confidence": mean_conf,
                "accuracy": accuracy,
                "count": int(inside.sum()),
            }
        )
    return float(ece), table


@dataclass(frozen=True)
class PairedDelta:
    """Candidate minus baseline on the same items, with a bootstrap confidence interval."""

    delta: float
    low: float
    high: float
    candidate: float
    baseline: float
    n: int
    confidence: float

    def beats(self, margin: float = 0.0) -> bool:
        """True when the whole interval lies above `margin`."""
        return self.low > margin


def paired_bootstrap(
    candidate: NDArray[np.floating],
    baseline: NDArray[np.floating],
    statistic: Callable[[NDArray[np.integer]], tuple[float, float]] | None = None,
    groups: NDArray[np.integer] | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDelta:
    """Bootstrap the difference of a statistic over paired items.

    By default the statistic is the mean of per-item scores (e.g. available = 1). `statistic`, if given, maps
    an array of resampled item indices to (candidate value, baseline value), for statistics such as macro-F1
    that are not means. `groups` resamples whole groups (e.g. all seeds of one product) together.
    """
    candidate = np.asarray(candidate, float)
    baseline = np.asarray(baseline, float)
    if candidate.shape != baseline.shape:
        raise ValueError(f"paired scores differ in shape: {candidate.shape} vs {baseline.shape}")
    n = len(candidate)
    if n == 0:
        raise ValueError("no paired items to compare")

    def stat(indices: NDArray[np.integer]) -> tuple[float, float]:
        if statistic is not None:
            return statistic(indices)
        return float(candidate[indices].mean()), float(baseline[indices].mean())

    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        members = [np.nonzero(groups == g)[0] for g in np.unique(groups)]
    deltas = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(0, len(members), len(members))
        indices = np.concatenate([members[i] for i in picked])
        a, b = stat(indices)
        deltas[r] = a - b
    full_a, full_b = stat(np.arange(n))
    alpha = (1.0 - confidence) / 2
    return PairedDelta(
        delta=full_a - full_b,
        low=float(np.quantile(deltas, alpha)),
        high=float(np.quantile(deltas, 1 - alpha)),
        candidate=full_a,
        baseline=full_b,
        n=n,
        confidence=confidence,
    )
