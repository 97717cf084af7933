"""How noisy the cost per usable image is: 95% bootstrap intervals over products, from the attempts an evaluation
recorded (`rad evaluate-generation --records ...`), and each run's ratio to the base generator's plain run.

A product's UNet evaluations are the steps its attempts reached (each attempt is one slot; a steering particle
that stopped at a resample point reached that step), its usable image is an accepted one the reviewer calls
available. Products are resampled with replacement, the same draw for every run, so the ratios to plain are
paired by product (all runs share the products and seeds).

    python benchmarks/cost_intervals.py --records reports/generation/attempts.parquet [--resamples 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from common import machine


def per_product(records: pd.DataFrame, run: str, products: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UNet evaluations, usable images) of each product in `run`."""
    rows = records[records.run == run]
    evals = rows.groupby("product").step_reached.sum().reindex(products, fill_value=0).to_numpy()
    usable = rows[(rows.status == "accepted") & (rows.reviewer_label == "available")]
    return evals, usable.groupby("product").size().reindex(products, fill_value=0).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, default=Path("reports/generation/attempts.parquet"))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    records = pd.read_parquet(args.records)
    products = sorted(records["product"].unique())
    draws = np.random.default_rng(args.seed).integers(0, len(products), (args.resamples, len(products)))
    print(f"{len(products)} products, {args.resamples} bootstrap resamples of them (paired across runs)")
    plain_evals, plain_usable = per_product(records, "plain", products)
    plain = plain_evals.sum() / max(plain_usable.sum(), 1)
    base = plain_evals[draws].sum(1) / np.maximum(plain_usable[draws].sum(1), 1)
    print(f"{'run':<16} {'UNet evals / usable image':>28} {'ratio to the base plain run':>32}")
    for run in records.run.unique():
        evals, usable = per_product(records, run, products)
        cost = evals.sum() / max(usable.sum(), 1)
        boot = evals[draws].sum(1) / np.maximum(usable[draws].sum(1), 1)
        low, high = np.percentile(boot, [2.5, 97.5])
        ratio_low, ratio_high = np.percentile(boot / base, [2.5, 97.5])
        print(
            f"{run:<16} {cost:>12.1f} [{low:6.1f}, {high:6.1f}]   "
            f"{cost / plain:>12.3f} [{ratio_low:.3f}, {ratio_high:.3f}]"
        )


if __name__ == "__main__":
    main()
