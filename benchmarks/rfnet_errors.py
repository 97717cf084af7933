"""Where RFNet goes wrong on a split: accuracy and confusion matrix per product category and source, and how
often available renderings are called size mismatch, by the product's real height.

    python benchmarks/rfnet_errors.py --model models/rfnet/model --shards data/shards [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common import machine
from reliable_ad.data.dataset import read_index
from reliable_ad.labels import AVAILABLE
from reliable_ad.models.rfnet import RFNet
from reliable_ad.training.rfnet_eval import predict_split

HEIGHT_BINS = [0, 10, 15, 20, 30, 100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/rfnet/model"))
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print(machine())
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    predictions = predict_split(RFNet.load(args.model), args.shards, args.split)
    files = [args.shards / shard["file"] for shard in read_index(args.shards)["splits"][args.split]["shards"]]
    columns = ["id", "category", "height_cm", "source"]
    meta = pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files]).set_index("id")
    rows = meta.loc[predictions.ids].reset_index()
    labels = predictions.labels
    rows["target"] = [labels[i] for i in predictions.target]
    rows["predicted"] = [labels[i] for i in predictions.predicted]
    for (category, source), group in rows.groupby(["category", "source"]):
        accuracy = (group["target"] == group["predicted"]).mean()
        print(f"\n{category} / {source}: {len(group)} rows, accuracy {accuracy:.3f} (rows: truth, columns: predicted)")
        print(pd.crosstab(group["target"], group["predicted"]).reindex(index=labels, columns=labels, fill_value=0))
    available = rows[rows["target"] == AVAILABLE]
    bins = pd.cut(available["height_cm"], HEIGHT_BINS, right=False)
    called = (available["predicted"] == "size_mismatch").groupby([available["category"], bins], observed=True)
    print("\navailable rows called size_mismatch, by category and real height (cm):")
    print(called.agg(["size", "mean"]).rename(columns={"size": "rows", "mean": "share"}).round(3).to_string())
    print(f"\nall: {np.mean(rows['target'] == rows['predicted']):.3f} accuracy over {len(rows)} rows")


if __name__ == "__main__":
    main()
