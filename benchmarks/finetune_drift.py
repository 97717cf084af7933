"""Why plain fine-tuning made the generator worse: the denoising loss on a chosen mix of RF1M-synth renders, the
shipped generator's modules that train, and the reviewer's first-attempt rate on the evaluation's products for
several seeds, paired with the base.

    python benchmarks/finetune_drift.py --mix pretrain --modules controlnet --lr 3e-4 --steps 200
    python benchmarks/finetune_drift.py --mix available --lr 3e-5 --ema 0.99 --steps 400 --eval-every 200
    python benchmarks/finetune_drift.py --mix pretrain --modules controlnet,unet,text_encoder --lr 3e-4

`--mix pretrain` is the pretraining's own class mix (half of it defective by design), `available` only the
available class, `defects` only the defects.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from common import machine, reviewer_first_attempts
from reliable_ad.data.synth.products import held_out_products
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.config import PretrainConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import load_prompt_pool
from reliable_ad.models.generator import load_components
from reliable_ad.params import load_params
from reliable_ad.training.pretrain_generator import denoising_loss, examples_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", choices=("pretrain", "available", "defects"), default="pretrain")
    parser.add_argument("--modules", default="controlnet", help="comma-separated: controlnet, unet, text_encoder")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights evaluated (0: none)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(machine(), flush=True)
    params = load_params(Path("params.yaml"))
    components = load_components(params.paths.generator)
    pool = load_prompt_pool(params.generation.prompts)
    products = held_out_products(params.generation.evaluate.products, params.generation.evaluate.product_seed)
    base = reviewer_first_attempts(Denoiser(components, 20, 7.5), pool, products, args.seeds)
    print(json.dumps({"step": 0, "rate": round(float(base.mean()), 4)}), flush=True)
    cfg = PretrainConfig()
    mixes = {
        "pretrain": cfg.synth.class_mix,
        "available": {"available": 1.0},
        "defects": {k: v for k, v in cfg.synth.class_mix.items() if k != "available"},
    }
    world = cfg.synth.model_copy(update={"class_mix": mixes[args.mix]})
    modules = {"controlnet": components.controlnet, "unet": components.unet, "text_encoder": components.text_encoder}
    trained = {name: modules[name] for name in args.modules.split(",")}
    for module in (*modules.values(), components.vae):
        module.requires_grad_(False).eval()
    weights = []
    for module in trained.values():
        module.requires_grad_(True).train()
        weights += list(module.parameters())
    averages = {k: copy.deepcopy(m).requires_grad_(False) for k, m in trained.items()} if args.ema else {}
    optimizer = torch.optim.AdamW(weights, lr=args.lr, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(components.scheduler.config)
    rng = np.random.default_rng([0, 7500])

    def evaluate(step: int) -> None:
        saved = {k: copy.deepcopy(m.state_dict()) for k, m in trained.items()}
        for name, module in trained.items():
            if averages:
                module.load_state_dict(averages[name].state_dict())
            module.eval()
        rates = reviewer_first_attempts(Denoiser(components, 20, 7.5), pool, products, args.seeds)
        for name, module in trained.items():
            module.load_state_dict(saved[name])
            module.train()
        row = {"step": step, "rate": round(float(rates.mean()), 4), "delta": round(float((rates - base).mean()), 4)}
        print(json.dumps({**row, "per_seed": [round(float(r), 3) for r in rates.mean(axis=1)]}), flush=True)

    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup else args.lr
        samples = [draw_sample(world, 2 * 10**7 + step * args.batch + i) for i in range(args.batch)]
        loss = denoising_loss(components, scheduler, examples_of(samples), 0.1, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        optimizer.step()
        with torch.no_grad():
            for name, module in trained.items() if averages else ():
                for average, weight in zip(averages[name].parameters(), module.parameters(), strict=True):
                    average.lerp_(weight, 1 - args.ema)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            evaluate(step + 1)
    print(json.dumps({"train_seconds": round(time.time() - started)}), flush=True)
    evaluate(args.steps)


if __name__ == "__main__":
    main()
