"""The methods that learn from people's labels, with the spread over seeds the pipeline's one-seed table lacks.

A labelled batch of the base generator's images (fresh products, `--images` per product, labelled by the
reviewer, as `rad rfft batch` makes it), then each method learns from it with the project's settings
(`generation.methods`) and the reviewer counts first attempts on the evaluation's 96 products for `--seeds`
seeds each: the rate per seed, the gain over the base with a paired bootstrap interval that resamples whole
products (all seeds of one product together), and the background diversity against the base's (the guard's
descriptor). No candidate selection here: the methods' last weights, to see what each learns.

    python benchmarks/label_methods.py [--products 500] [--images 2] [--seeds 4] [--methods prompts kto ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import machine, reviewer_first_attempts
from reliable_ad.api.common import controlnet_version
from reliable_ad.api.methods import label_batch
from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.config import check_method
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig, load_prompt_pool
from reliable_ad.generation.rfft_eval import diversity
from reliable_ad.models.generator import load_components
from reliable_ad.params import load_params
from reliable_ad.stats import paired_bootstrap
from reliable_ad.training.from_labels import read_labelled_batch, tune_on_labels
from reliable_ad.training.prompt_select import select_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--products", type=int, default=500, help="products of the labelled batch")
    parser.add_argument("--images", type=int, default=2, help="images per product in the batch")
    parser.add_argument("--seeds", type=int, default=4, help="seeds of each evaluation product")
    parser.add_argument("--methods", nargs="+", default=["prompts", "sft", "kto", "dpo", "prompts+kto"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/label_methods.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = load_params(args.params)
    params.generation.methods.batch.products = args.products
    params.generation.methods.batch.images_per_product = args.images
    generator, cfg = params.paths.generator, params.generation.methods
    ev = params.generation.evaluate
    pool = load_prompt_pool(params.generation.prompts)
    evaluated = held_out_products(ev.products, ev.product_seed)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        made = label_batch(params, generator, Path(scratch) / "batch")
        batch = read_labelled_batch(Path(scratch) / "batch", controlnet_version(generator, None))
        learnt, _ = select_prompts(pool, [e.prompt for e in batch.examples], batch.available, cfg.prompts)
        weights = {part for name in args.methods for part in check_method(name) if part != "prompts"}
        tuned = {w: tune_on_labels(cfg.tune, w, generator, batch, Path(scratch) / w) for w in sorted(weights)}

        def evaluate(controlnet: Path | None, prompts: list[PromptConfig]) -> dict:
            components = load_components(generator, controlnet)
            denoiser = Denoiser(components, ev.recurrent.steps, ev.recurrent.guidance_scale)
            good, features = reviewer_first_attempts(denoiser, prompts, evaluated, args.seeds, grid=4)
            return {"good": good, "features": features}

        base = evaluate(None, pool)
        products = base["good"].shape[1]
        groups = np.tile(np.arange(products), args.seeds)
        for name in ["base", *args.methods]:
            parts = [] if name == "base" else check_method(name)
            update = next((part for part in parts if part != "prompts"), None)
            got = base if name == "base" else evaluate(
                Path(scratch) / update / "controlnet" if update else None, learnt if "prompts" in parts else pool
            )  # fmt: skip
            delta = paired_bootstrap(got["good"].ravel(), base["good"].ravel(), groups=groups)
            rows[name] = {
                "rate": float(got["good"].mean()),
                "per_seed": [round(float(x), 3) for x in got["good"].mean(axis=1)],
                "delta": delta.delta,
                "delta_ci": [delta.low, delta.high],
                "diversity_ratio": diversity(got["features"]) / diversity(base["features"]),
                "train_seconds": tuned[update]["train_seconds"] if update else 0.0,
            }
            print(json.dumps({name: rows[name]}), flush=True)
    result = {"machine": machine(), "batch": made, "products": products, "seeds": args.seeds, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{machine()}; batch: {made['rows']} labels; {products} products x {args.seeds} seeds\n")
    print(
        "| method | reviewer rate (per seed) | Δ [95% interval] | diversity vs base | train s |\n|---|---|---|---|---|"
    )
    for name, r in rows.items():
        seeds = " / ".join(f"{100 * x:.0f}" for x in r["per_seed"])
        print(
            f"| {name} | {100 * r['rate']:.1f}% ({seeds}) | {100 * r['delta']:+.1f} "
            f"[{100 * r['delta_ci'][0]:+.1f}, {100 * r['delta_ci'][1]:+.1f}] | {r['diversity_ratio']:.2f} | "
            f"{r['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
