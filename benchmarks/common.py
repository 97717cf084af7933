"""What every benchmark prints first: the machine it ran on and how busy it was."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average (1/5/15 min) {load}"
    )


def reviewer_first_attempts(denoiser: Any, pool: list[Any], products: list[Any], seeds: int, grid: int = 0) -> Any:
    """The reviewer's verdict (1/0, seeds x products) on first attempts of `products` for run seeds 0..seeds-1,
    and with `grid`, the background descriptors of seed 0's images (the quality guard's)."""
    import numpy as np
    import torch

    from reliable_ad.generation.config import RecurrentConfig
    from reliable_ad.generation.recurrent import job_for
    from reliable_ad.generation.rfft_eval import background_descriptor

    jobs = [job_for(p, i, 1, pool, RecurrentConfig(seed=s)) for s in range(seeds) for i, p in enumerate(products)]
    verdicts, features = [], []
    for start in range(0, len(jobs), 48):
        chunk = jobs[start : start + 48]
        slots = [denoiser.start(job) for job in chunk]
        while not denoiser.done(slots[0]):
            denoiser.advance(slots)
        for k, (image, job) in enumerate(
            zip(denoiser.images(torch.cat([s.latents for s in slots]), slots), chunk, strict=True)
        ):
            assert job.reviewer is not None  # RF1M-synth products come with the simulated reviewer
            verdicts.append(job.reviewer(image) == "available")
            if grid and start + k < len(products):
                features.append(background_descriptor(image, job.product, grid))
    good = np.array(verdicts, float).reshape(seeds, len(products))
    return (good, np.stack(features)) if grid else good
