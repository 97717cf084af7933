"""RFFT variants side by side, counted by the reviewer: each variant fine-tunes the base ControlNet under the
pipeline's judge, and every `--every` steps its snapshot makes first attempts for validation products (neither
training nor evaluation products); the table gives, per snapshot, the reviewer's available rate (the people),
the training judge's, and their difference (the hacking gap). Step 0 is the base generator.

    python benchmarks/rfft_variants.py --root . --variant paper '{}' --variant raft \
        '{"feedback_weight": 0, "regularizer": "none", "anchor": 1, "anchor_data": "accepted"}'

--root is a finished pipeline (models/rfnet/model, models/tiny-generator/model, params.yaml); the variants'
settings are laid over its `generation.rfft`. Runs go to --out/<variant> and resume when interrupted. With 96
products one first attempt each, a rate's standard error is about 5 points: differences under ~10 are noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import machine
from reliable_ad import api
from reliable_ad.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    parser.add_argument("--out", type=Path, default=Path("models/rfft-variants"))
    parser.add_argument("--every", type=int, default=100, help="steps between scored snapshots")
    parser.add_argument("--products", type=int, default=96, help="validation products")
    parser.add_argument("--product-seed", type=int, default=555)
    parser.add_argument("--judge", type=Path, help="default: ROOT/models/rfnet/model")
    args = parser.parse_args()
    print(machine())
    params = load_params(args.root / "params.yaml")
    params.generation.prompts = args.root / params.generation.prompts
    generator = args.root / "models/tiny-generator/model"
    judge = args.judge or args.root / "models/rfnet/model"
    select = {"every": args.every, "by": "reviewer", "products": args.products, "product_seed": args.product_seed}
    rows = []
    for name, settings in args.variant:
        overrides = json.loads(settings)
        rfft = {**params.generation.rfft.model_dump(), **overrides, "select": select}
        variant = params.model_copy(deep=True)
        variant.generation.rfft = type(params.generation.rfft).model_validate(rfft)
        started = time.time()
        api.rfft_train(variant, generator, judge, args.out / name, progress=False)
        table = json.loads((args.out / name / "selection.json").read_text())["table"]
        rows += [{"variant": name, "seconds": round(time.time() - started), **row} for row in table]
        print(json.dumps({"variant": name, "settings": overrides, "snapshots": table}))
    print(f"\n{'variant':<16} {'step':>5} {'reviewer':>9} {'judge':>7} {'gap':>7}")
    for row in rows:
        print(
            f"{row['variant']:<16} {row['step']:>5} {row['selector_rate']:>9.3f} "
            f"{row['training_judge_rate']:>7.3f} {row['gap']:>+7.3f}"
        )


if __name__ == "__main__":
    main()
