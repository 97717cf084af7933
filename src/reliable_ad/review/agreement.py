"""Agreement on pulled tasks: between annotators, and between the judge and the people.

The judge's accepts are what production ships, so the headline is the precision of its accepts (the share of
images it accepts that people call available); below the configured bound the pull flags judge drift.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reliable_ad.labels import AVAILABLE, LabelSet


@dataclass(frozen=True)
class Vote:
    annotator: int
    annotation: int
    updated_at: str
    label: str


@dataclass(frozen=True)
class Judged:
    """One pulled image: what the judge said of it and what the people settled on."""

    judge_label: str
    p_available: float
    threshold: float
    human: str


def annotator_agreement(tasks_votes: Sequence[Sequence[Vote]]) -> dict[str, float]:
    """Over tasks with several annotators: the share with one verdict, mean pairwise agreement and Fleiss' kappa
    (in its form for a varying number of raters per task)."""
    shared = [[v.label for v in votes] for votes in tasks_votes if len(votes) > 1]
    if not shared:
        return {"tasks_multi": 0}
    per_task = []
    totals: Counter[str] = Counter()
    for names in shared:
        n, counts = len(names), Counter(names)
        per_task.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(names)
    observed = sum(per_task) / len(per_task)
    chance = sum((c / sum(totals.values())) ** 2 for c in totals.values())
    return {
        "tasks_multi": len(shared),
        "unanimous_share": sum(len(set(names)) == 1 for names in shared) / len(shared),
        "pairwise_agreement": observed,
        "fleiss_kappa": (observed - chance) / (1 - chance) if chance < 1 else 1.0,
    }


def judge_vs_human(items: Sequence[Judged], labels: LabelSet, min_precision: float) -> dict[str, Any]:
    """Confusion (judge label x human label), the precision of the judge's accepts, agreement on available
    vs not and on the exact label, and the drift flag. Figures without items to count are NaN."""
    accepted = [i for i in items if i.p_available >= i.threshold]
    precision = _share(sum(i.human == AVAILABLE for i in accepted), len(accepted))
    available = [i for i in items if i.human == AVAILABLE]
    return {
        "judged": len(items),
        "judge_accepts": len(accepted),
        "judge_accept_precision": precision,
        "judge_accept_recall": _share(sum(i.p_available >= i.threshold for i in available), len(available)),
        "judge_binary_agreement": _share(
            sum((i.p_available >= i.threshold) == (i.human == AVAILABLE) for i in items), len(items)
        ),
        "judge_label_agreement": _share(sum(i.judge_label == i.human for i in items), len(items)),
        "judge_drift": bool(precision < min_precision) if not math.isnan(precision) else False,
        "drift_min_precision": min_precision,
        "confusion": {
            judged: {human: sum(i.judge_label == judged and i.human == human for i in items) for human in labels.names}
            for judged in labels.names
        },
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")
