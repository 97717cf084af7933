"""How well RFNet judges *generated* images: its p(available) against the reviewer's label on every finished
attempt of the plain run of `rad evaluate-generation` (reports/generation/attempts.parquet of a pipeline run).

    python benchmarks/judge_on_generated.py [--root .] [--attempts reports/generation/attempts.parquet]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--attempts", type=Path, help="attempts table (default ROOT/reports/generation/...)")
    args = parser.parse_args()
    print(machine())
    attempts = pd.read_parquet(args.attempts or args.root / "reports" / "generation" / "attempts.parquet")
    judged = attempts[(attempts["run"] == "plain") & attempts["reviewer_label"].notna()]
    available = judged["reviewer_label"] == "available"
    print(f"{len(judged)} generated attempts, {available.mean():.1%} available by the reviewer")
    print(
        f"mean p(available): {judged.loc[available, 'p_available'].mean():.3f} where the reviewer says available, "
        f"{judged.loc[~available, 'p_available'].mean():.3f} elsewhere"
    )
    print(f"ROC AUC of p(available) for the reviewer's verdict: {roc_auc_score(available, judged['p_available']):.3f}")
    accepted = judged["p_available"] >= 0.5
    print(
        f"at p >= 0.5 the judge accepts {accepted.mean():.1%}; of those the reviewer calls "
        f"{available[accepted].mean():.1%} available"
        if accepted.any()
        else "at p >= 0.5 the judge accepts none"
    )
    ran = judged["status"] == "accepted"  # at the tau the run used (the judge's calibrated one by default)
    print(
        f"at the run's own tau the judge accepted {ran.mean():.1%}; "
        f"of those the reviewer calls {available[ran].mean():.1%} available"
    )
    print(pd.crosstab(judged["reviewer_label"], judged["judge_label"]).to_string())


if __name__ == "__main__":
    main()
