"""RF1M-synth speed (samples/s written to disk, one core) and the reviewer's agreement with the renderer.

python benchmarks/synth_and_reviewer.py [--n 3000] [--agreement 3000]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from common import machine
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.reviewer import product_mask, review
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.labels import RF1M_LABELS


def synth_speed(n: int, size: int) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second of this one process)."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        write_synth(SynthConfig(n=n, size=size), Path(tmp) / "ds", workers=1, archives=1)
        return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def agreement(n: int, size: int) -> dict[str, float]:
    hits: dict[str, list[bool]] = collections.defaultdict(list)
    mix = {name: 1.0 for name in RF1M_LABELS.values()}
    cfg = SynthConfig(n=n, size=size, seed=123, class_mix=mix)
    for index in range(n):
        sample = draw_sample(cfg, index)
        verdict = review(sample.rendering.image, product_mask(sample.rendering.product), sample.product.height_cm)
        hits[sample.label].append(verdict.label == sample.label)
    return {label: sum(v) / len(v) for label, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="samples written for the speed figure")
    parser.add_argument("--agreement", type=int, default=3000, help="renderings judged per size")
    args = parser.parse_args()
    print(machine())
    wall, cpu = synth_speed(args.n, 64)
    print(
        "RF1M-synth at 64 px, 1 worker (render, depth, saliency, 4 PNGs into a zip package as the pipeline writes "
        f"them), {args.n} samples: "
        f"{wall:.0f} samples per wall-clock second, {cpu:.0f} per CPU second of the one core it used"
    )
    for size in (64, 128, 32):
        count = args.agreement if size == 64 else args.agreement // 3
        per_class = agreement(count, size)
        overall = sum(per_class.values()) / len(per_class)
        detail = ", ".join(f"{k} {v:.3f}" for k, v in per_class.items())
        print(f"reviewer agreement at {size} px over {count} renderings (classes balanced): {overall:.4f} ({detail})")


if __name__ == "__main__":
    main()
