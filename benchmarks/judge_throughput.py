"""RFNetJudge throughput on CPU: images/s through `RFNetJudge.__call__` (depth + saliency maps computed, RFNet forward),
at 64 px, batch 64, for 1 and 2 torch threads. Uses the trained RFNet if given, else a fresh one of the
default size (the speed does not depend on the weights).

    python benchmarks/judge_throughput.py [--model models/rfnet/model] [--images 1024]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import machine
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.judge import RFNetJudge
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(machine())
    samples = [draw_sample(SynthConfig(), i) for i in range(args.batch)]
    images = [s.rendering.image for s in samples]
    products = [s.rendering.product for s in samples]
    captions = [s.product.title for s in samples]
    model = RFNet.load(args.model) if args.model else RFNet(RFNetConfig(vocabulary=["red", "cm"]))
    judge = RFNetJudge(model, batch_size=args.batch)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        judge(images, products, captions)  # warm-up
        rounds = max(1, args.images // args.batch)
        started = time.perf_counter()
        for _ in range(rounds):
            judge(images, products, captions)
        seconds = time.perf_counter() - started
        print(
            f"judge, {threads} thread(s), batch {args.batch} at 64 px: {rounds * args.batch / seconds:.0f} images/s "
            f"({rounds * args.batch} images, maps included)"
        )


if __name__ == "__main__":
    main()
