"""How far early rejection can go: how well the x0 prediction at each probe step tells which first attempts the
judge will accept at the end, and what that allows in UNet evaluations per accepted image.

For fresh products (not the evaluation's), one first attempt each: the decoded x0 previews at the probe steps and
the judge's final decision. On the last `--test-share` of them, per probe step:
- ROC AUC of the judge's p(available) on the preview for the final accept,
- the same for a copy of the judge fine-tuned on the previews of the other products (target: the final accept;
  a "distilled early judge"),
- the cheapest UNet evaluations per accept, relative to no early check, with at most `--budget` of the final
  accepts aborted: for the judge, the fine-tuned judge, and a perfect predictor (the ceiling at that step).

    python benchmarks/early_rejection_ceiling.py --generator models/tiny-generator/model \
        --judge models/rfnet/model [--products 600] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from common import machine
from reliable_ad.api.common import denoiser_from, judge_from
from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.config import GENERATOR_CATEGORIES
from reliable_ad.generation.evaluate import first_attempt_previews
from reliable_ad.generation.prompts import load_prompt_pool
from reliable_ad.generation.recurrent import acceptance_threshold
from reliable_ad.judge import RFNetJudge
from reliable_ad.params import load_params


def cheapest_ratio(score: np.ndarray, accepted: np.ndarray, step: int, steps: int, budget: float) -> float:
    """Min over abort thresholds of (UNet steps per accept) / (the same without an early check)."""
    plain = steps / accepted.mean()
    best = plain
    for threshold in np.unique(score):
        abort = score < threshold
        if (abort & accepted).sum() > budget * accepted.sum():
            continue
        kept = (accepted & ~abort).mean()
        if kept > 0:
            best = min(best, np.where(abort, step, steps).mean() / kept)
    return best / plain


def fine_tune(
    judge: RFNetJudge, images: list, products: list, captions: list, target: np.ndarray, epochs: int
) -> RFNetJudge:
    """A copy of the judge trained to say 'available' exactly for the previews whose attempt ends accepted."""
    tuned = RFNetJudge(copy.deepcopy(judge.model))
    tuned.model.train()
    optimizer = torch.optim.AdamW(tuned.model.parameters(), lr=3e-4)
    available = tuned.model.available_index
    y = torch.tensor(target, dtype=torch.float32)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            out = tuned([images[i] for i in idx], [products[i] for i in idx], [captions[i] for i in idx], grad=True)
            log_p = out.logits.log_softmax(-1)
            others = torch.cat([log_p[:, :available], log_p[:, available + 1 :]], dim=1).logsumexp(-1)
            loss = F.binary_cross_entropy_with_logits(log_p[:, available] - others, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    tuned.model.eval()
    return tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=Path("models/tiny-generator/model"))
    parser.add_argument("--judge", default="models/rfnet/model")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--products", type=int, default=600)
    parser.add_argument("--product-seed", type=int, default=9001, help="not the evaluation's or RFFT's products")
    parser.add_argument("--test-share", type=float, default=0.3)
    parser.add_argument("--budget", type=float, default=0.05, help="largest share of final accepts aborted")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs of the early judge")
    args = parser.parse_args()
    print(machine())
    params = load_params(args.params)
    rc = params.generation.evaluate.recurrent
    denoiser = denoiser_from(args.generator, None, params)
    judge = judge_from(params, args.judge)
    pool = load_prompt_pool(params.generation.prompts)
    products = held_out_products(args.products, args.product_seed, list(GENERATOR_CATEGORIES))
    probes = [s for s in params.generation.evaluate.probe_steps if s < rc.steps]
    previews, target = first_attempt_previews(denoiser, judge, products, pool, rc, probes)
    cut = int(len(products) * (1 - args.test_share))
    test = slice(cut, None)
    rgba = [p.rgba for p in products]
    captions = [p.caption for p in products]
    print(
        f"{len(products)} products, {rc.steps} steps, judge's tau {acceptance_threshold(rc, judge):.3f}: "
        f"{target.mean():.1%} of first attempts accepted; tested on the last {len(products) - cut} "
        f"({target[test].sum()} accepts), false-abort budget {args.budget:.0%}"
    )
    print("step  AUC judge  AUC fine-tuned  ratio judge  ratio fine-tuned  ratio perfect predictor")
    for step in probes:
        images = previews[step]
        plain = judge(images, rgba, captions).p_available.numpy()
        tuned = fine_tune(judge, images[:cut], rgba[:cut], captions[:cut], target[:cut], args.epochs)
        distilled = tuned(images, rgba, captions).p_available.numpy()
        y = target[test]
        ratios = [
            cheapest_ratio(score[test], y, step, rc.steps, args.budget)
            for score in (plain, distilled, target.astype(float))
        ]
        print(
            f"{step:4d}  {roc_auc_score(y, plain[test]):9.3f}  {roc_auc_score(y, distilled[test]):14.3f}  "
            + "  ".join(f"{r:11.3f}" for r in ratios)
        )


if __name__ == "__main__":
    main()
