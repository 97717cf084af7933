"""Every measured target of the embedded default against the metrics files a `dvc repro` wrote.

Reads metrics/*.json under --root (a finished run) and prints one row per target: the figure, the goal and
whether it is met. A target whose metrics file is missing says so instead of passing.

    python benchmarks/targets.py [--root .]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine

Check = tuple[str, str, str, Callable[[dict[str, Any]], float | None], Callable[[float], bool]]


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(metrics: dict[str, Any]) -> float | None:
        value: Any = metrics
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return read


def _ablation_gap(metrics: dict[str, Any]) -> float | None:
    full, alone = _get("all", "macro_f1")(metrics), _get("generated only", "macro_f1")(metrics)
    return None if full is None or alone is None else full - alone


def _final_rate_gap(metrics: dict[str, Any]) -> float | None:
    early, plain = _get("final_available_rate_early")(metrics), _get("final_available_rate_rfnet")(metrics)
    return None if early is None or plain is None else abs(early - plain)


def _attempts_ratio(metrics: dict[str, Any]) -> float | None:
    tuned, base = (
        _get("final", "attempts_per_available_tuned")(metrics),
        _get("final", "attempts_per_available_base")(metrics),
    )
    return None if tuned is None or base is None or base == 0 else tuned / base


def _unseen_low(metrics: dict[str, Any]) -> float | None:
    rounds = metrics.get("rounds") or []
    return _get("unseen", "delta_ci_low")(rounds[-1]) if rounds else None


CHECKS: list[Check] = [
    ("rfnet.json", "RFNet test macro-F1 (held-out categories)", ">= 0.90", _get("macro_f1"), lambda v: v >= 0.9),
    ("rfnet.json", "RFNet test AP(available)", ">= 0.95", _get("ap_available"), lambda v: v >= 0.95),
    (
        "rfnet_ablation.json",
        "macro-F1, all inputs - generated image only",
        ">= 0.05 (rad rfnet ablate)",
        _ablation_gap,
        lambda v: v >= 0.05,
    ),
    (
        "generation.json",
        "base first-attempt available rate (reviewer)",
        "25-75%",
        _get("available_rate_first_reviewer"),
        lambda v: 0.25 <= v <= 0.75,
    ),
    (
        "generation.json",
        "UNet evals per accept, early / plain",
        "<= 0.7",
        _get("unet_evals_ratio_early_vs_plain"),
        lambda v: v <= 0.7,
    ),
    (
        "generation.json",
        "final available rate, |early - plain|",
        "<= 0.01",
        _final_rate_gap,
        lambda v: v <= 0.01,
    ),
    (
        "generation.json",
        "accepts/min, slot refilling / whole batch",
        ">= 1.3",
        _get("accepts_per_min_ratio_refill_vs_whole_batch"),
        lambda v: v >= 1.3,
    ),
    (
        "generation.json",
        "products with an accepted image (max attempts)",
        ">= 0.95 (base rate >= 50%)",
        _get("final_available_rate_rfnet"),
        lambda v: v >= 0.95,
    ),
    ("rfft.json", "RFFT reviewer first-attempt gain", ">= +0.15", _get("delta"), lambda v: v >= 0.15),
    ("rfft.json", "RFFT gain, 95% interval low end", "> 0", _get("delta_ci_low"), lambda v: v > 0),
    ("rfft.json", "background diversity guard", "ok", _get("guard_ok"), lambda v: v >= 1),
    (
        "rfft.json",
        "RFFT hacking gap (RFNet - reviewer, tuned)",
        "<= 0.05",
        _get("hacking_gap_tuned"),
        lambda v: v <= 0.05,
    ),
    (
        "generation.json",
        "judge ROC AUC on generated attempts (reviewer)",
        ">= 0.95",
        _get("judge_auc_generated"),
        lambda v: v >= 0.95,
    ),
    (
        "generation.json",
        "accepted images the reviewer calls available",
        ">= 0.90",
        _get("judge_precision_generated"),
        lambda v: v >= 0.9,
    ),
    # the feedback rounds: the last round's ControlNet against the base generator
    ("rounds.json", "rounds: reviewer first-attempt gain", ">= +0.15", _get("final", "delta"), lambda v: v >= 0.15),
    ("rounds.json", "rounds: gain, 95% interval low end", "> 0", _get("final", "delta_ci_low"), lambda v: v > 0),
    (
        "rounds.json",
        "rounds: hacking gap (tuned)",
        "<= 0.05",
        _get("final", "hacking_gap_tuned"),
        lambda v: v <= 0.05,
    ),
    ("rounds.json", "rounds: quality guard", "ok", _get("final", "guard_ok"), lambda v: v >= 1),
    (
        "rounds.json",
        "rounds: attempts per available image, tuned / base",
        "<= 0.75",
        _attempts_ratio,
        lambda v: v <= 0.75,
    ),
    (
        "rounds.json",
        "rounds: reviewer gain on unseen products",
        "> 0 (interval)",
        _unseen_low,
        lambda v: v > 0,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    print(machine())
    print(f"{'target':<50} {'measured':>10}  {'goal':<28} status")
    for file, name, goal, read, ok in CHECKS:
        path = args.root / "metrics" / file
        if not path.exists():
            print(f"{name:<50} {'-':>10}  {goal:<28} no {path}")
            continue
        value = read(json.loads(path.read_text()))
        if value is None or math.isnan(value):
            print(f"{name:<50} {'n/a':>10}  {goal:<28} not measured in {file}")
            continue
        print(f"{name:<50} {value:>10.3f}  {goal:<28} {'met' if ok(value) else 'MISSED'}")
    rfnet = args.root / "metrics" / "rfnet.json"
    by_source = json.loads(rfnet.read_text()).get("by_source", {}) if rfnet.exists() else {}
    for source, figures in by_source.items():  # no goal of their own: how the judge does on each kind of image
        for key in ("macro_f1", "ap_available"):
            name = f"RFNet test {key} on {source} ({figures['n']} rows)"
            print(f"{name:<50} {figures[key]:>10.3f}  {'reported':<28} -")
    summary = args.root / "models" / "rfnet" / "train_summary.json"
    if summary.exists():
        seconds = float(json.loads(summary.read_text())["seconds"])
        status = "met" if seconds <= 600 else "MISSED"
        print(f"{'RFNet training wall time (s)':<50} {seconds:>10.0f}  {'<= 600':<28} {status}")


if __name__ == "__main__":
    main()
