"""Votes, their resolution and agreement figures, on tasks shaped as Label Studio 1.23 exports them (the
integration test checks that shape against a real server)."""

import math

from reliable_ad.labels import LabelSet
from reliable_ad.review.agreement import Judged, Vote, annotator_agreement, judge_vs_human
from reliable_ad.review.pull import resolve, votes_of
from reliable_ad.review.queue import verdict_result

LABELS = LabelSet()


def _annotation(id_: int, who: int, label: str, at: str, cancelled: bool = False) -> dict:
    result = verdict_result(label)
    return {"id": id_, "completed_by": who, "result": result, "updated_at": at, "was_cancelled": cancelled}


def test_each_annotators_latest_valid_answer_counts_once() -> None:
    task = {
        "id": 7,
        "annotations": [
            _annotation(1, 1, "available", "2026-01-01T10:00:00Z"),
            _annotation(2, 1, "size_mismatch", "2026-01-01T11:00:00Z"),  # the same annotator, later: replaces
            _annotation(3, 2, "available", "2026-01-01T10:30:00Z", cancelled=True),  # skipped: no vote
            _annotation(4, 3, "blurry", "2026-01-01T10:40:00Z"),  # outside the label set
            {"id": 5, "completed_by": {"id": 4}, "result": [], "updated_at": "2026-01-01T10:50:00Z"},
        ],
    }
    votes, rejects = votes_of(task, LABELS)
    assert votes == [Vote(1, 2, "2026-01-01T11:00:00Z", "size_mismatch")]
    assert [(r["task"], r["annotation"], r["annotator"]) for r in rejects] == [(7, 4, 3), (7, 5, 4)]
    assert "'blurry' is not in the label set" in rejects[0]["reason"]
    assert "picks 0 verdicts" in rejects[1]["reason"]


def test_majority_holds_ties_hold_holds_any_disagreement_and_too_few_wait() -> None:
    def votes(*labels: str) -> list[Vote]:
        return [Vote(i, i, "t", label) for i, label in enumerate(labels)]

    assert resolve(votes("available", "available", "size_mismatch"), "majority", 1) == ("available", "")
    assert resolve(votes("available", "size_mismatch"), "majority", 1)[0] is None
    label, why = resolve(votes("available", "available", "size_mismatch"), "hold", 1)
    assert label is None and "disagree" in why
    assert resolve(votes("available"), "majority", 2) == (None, "1 of 2 annotators answered")
    assert resolve(votes("available", "available"), "hold", 2) == ("available", "")


def test_annotator_agreement_matches_hand_computed_fleiss_kappa() -> None:
    tasks = [
        [Vote(1, 1, "t", "available"), Vote(2, 2, "t", "available")],
        [Vote(1, 3, "t", "available"), Vote(2, 4, "t", "size_mismatch")],
        [Vote(1, 5, "t", "size_mismatch"), Vote(2, 6, "t", "size_mismatch"), Vote(3, 7, "t", "size_mismatch")],
        [Vote(1, 8, "t", "available")],  # one annotator: not counted
    ]
    figures = annotator_agreement(tasks)
    # P_i = 1, 0, 1 -> P = 2/3; label shares 3/7 available, 4/7 size -> P_e = 25/49
    p_e = 25 / 49
    assert figures["tasks_multi"] == 3 and math.isclose(figures["unanimous_share"], 2 / 3)
    assert math.isclose(figures["pairwise_agreement"], 2 / 3)
    assert math.isclose(figures["fleiss_kappa"], (2 / 3 - p_e) / (1 - p_e))
    assert annotator_agreement([tasks[3]]) == {"tasks_multi": 0}


def test_judge_vs_human_precision_of_accepts_and_drift() -> None:
    items = [
        Judged("available", 0.9, 0.5, "available"),
        Judged("available", 0.8, 0.5, "size_mismatch"),
        Judged("available", 0.7, 0.5, "size_mismatch"),
        Judged("space_mismatch", 0.2, 0.5, "space_mismatch"),
        Judged("size_mismatch", 0.4, 0.3, "available"),  # accepted at its own threshold 0.3
    ]
    figures = judge_vs_human(items, LABELS, min_precision=0.6)
    assert figures["judge_accepts"] == 4 and figures["judge_accept_precision"] == 0.5
    assert figures["judge_drift"] is True
    assert figures["judge_accept_recall"] == 1.0 and figures["judge_binary_agreement"] == 3 / 5
    assert figures["judge_label_agreement"] == 2 / 5
    assert figures["confusion"]["available"]["size_mismatch"] == 2
    assert figures["confusion"]["size_mismatch"]["available"] == 1
    assert sum(sum(row.values()) for row in figures["confusion"].values()) == 5

    none_accepted = judge_vs_human([Judged("space_mismatch", 0.1, 0.5, "available")], LABELS, 0.6)
    assert math.isnan(none_accepted["judge_accept_precision"]) and none_accepted["judge_drift"] is False
