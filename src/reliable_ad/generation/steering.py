"""Particle steering: the third scheduler beside slot-refilling recurrent generation and whole-batch regeneration.

Each product starts `particles` particles: the jobs of its next attempts (same seeds and prompts as recurrent
generation's attempts, so the runs pair up). At each resample point the particles are scored (probe, x0 judge or
both) and resampled to the next population size, as Feynman-Kac steering and DAS resample by a reward on the x0
prediction: with temperature 0 the best-scored survive, otherwise they are drawn with weights
exp(logit(score) / temperature). The particles left out stop there (recorded as aborted). A particle drawn more
than once branches: each copy after the first keeps the parent's x0 prediction and takes fresh noise at the
current noise level (DDIM at eta 0 would otherwise keep the copies identical). The judge decides at the end as
always: the product's image is the survivor it likes best, accepted at tau; other survivors it would accept are
recorded as "surplus". A product with no accepted survivor starts another round while its UNet budget (what
recurrent generation may spend on it: max_attempts x steps) allows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from reliable_ad.errors import InputError
from reliable_ad.generation.config import RecurrentConfig, SteeringConfig
from reliable_ad.generation.denoise import Denoiser, Slot
from reliable_ad.generation.probe import Probe, logit
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import Product, Run, RunStats, job_for
from reliable_ad.generation.scores import Scorer
from reliable_ad.judge import Judge
from reliable_ad.labels import AVAILABLE


class SteeringError(InputError):
    """Steering that cannot run as configured."""


@dataclass
class _Group:
    """One round of one product: its particles, all at the same step, and the resample points still ahead."""

    index: int
    round: int
    particles: list[Slot]
    points: deque[tuple[int, int]] = field(default_factory=deque)


def round_cost(cfg: SteeringConfig, steps: int) -> int:
    """UNet evaluations of one round: each stretch between resample points at its population size."""
    bounds = [0, *cfg.steps(steps), steps]
    sizes = [cfg.particles, *cfg.survivors]
    return sum(n * (b - a) for n, a, b in zip(sizes, bounds, bounds[1:], strict=False))


def steer_generate(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: RecurrentConfig,
    steering: SteeringConfig,
    probe: Probe | None = None,
    keep_images: bool = False,
    progress: bool = True,
) -> RunStats:
    """Steered generation of every product, batches of up to `cfg.batch_size` particles (a round starts whole)."""
    if AVAILABLE not in judge.labels:
        raise SteeringError(
            f"the judge's labels {list(judge.labels)} lack {AVAILABLE!r}: steering keeps the particle the judge calls "
            "available"
        )
    points = list(zip(steering.steps(cfg.steps), steering.survivors, strict=True))
    rounds = max(1, cfg.max_attempts * cfg.steps // round_cost(steering, cfg.steps))
    scorer = Scorer(denoiser, judge, steering.score, probe, [step for step, _ in points])
    run = Run(denoiser, judge, cfg, keep_images, scorer)
    pending: deque[tuple[int, int]] = deque((i, 0) for i in range(len(products)))
    groups: list[_Group] = []
    bar = tqdm(total=len(products), desc="steering", unit="product", disable=not progress)
    try:
        while pending or groups:
            while pending and (not groups or _size(groups) + steering.particles <= cfg.batch_size):
                i, r = pending.popleft()
                jobs = [
                    job_for(products[i], i, r * steering.particles + k + 1, pool, cfg)
                    for k in range(steering.particles)
                ]
                groups.append(_Group(i, r, [denoiser.start(job) for job in jobs], deque(points)))
            run.step([s for g in groups for s in g.particles])
            for step in sorted({g.points[0][0] for g in groups if g.points}):
                due = [g for g in groups if g.points and g.particles[0].step == step]
                if due:
                    _resample(run, scorer, due, step, steering.temperature)
            for group in [g for g in groups if denoiser.done(g.particles[0])]:
                groups.remove(group)
                if _finish(run, group) or group.round + 1 >= rounds:
                    bar.update(1)
                else:
                    pending.appendleft((group.index, group.round + 1))
    finally:
        scorer.close()
        bar.close()
    return run.stats("steering")


def _size(groups: list[_Group]) -> int:
    return sum(len(g.particles) for g in groups)


def _resample(run: Run, scorer: Scorer, groups: list[_Group], step: int, temperature: float) -> None:
    scores = scorer.scores([s for g in groups for s in g.particles], step)
    start = 0
    for group in groups:
        count = len(group.particles)
        p = scores[start : start + count]
        start += count
        _, survivors = group.points.popleft()
        picks = _picks(p, survivors, temperature, seed=group.particles[0].job.seed + step)
        for k, slot in enumerate(group.particles):
            if k not in picks:
                run.record(slot, "aborted", None, float(p[k]), "")
        kept: list[Slot] = []
        for n, k in enumerate(picks):
            parent = group.particles[k]
            kept.append(parent if k not in picks[:n] else _branch(run.denoiser, parent, seed=parent.job.seed * 31 + n))
        group.particles = kept


def _picks(scores: torch.Tensor, count: int, temperature: float, seed: int) -> list[int]:
    """Indices of the particles that go on (one per survivor; a repeated index branches)."""
    if temperature == 0:
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        return [order[k % len(order)] for k in range(count)]
    weights = torch.softmax(logit(scores) / temperature, 0).numpy()
    positions = (np.random.default_rng(seed).random() + np.arange(count)) / count  # systematic resampling
    return [min(int(k), len(weights) - 1) for k in np.searchsorted(np.cumsum(weights), positions)]


def _branch(denoiser: Denoiser, slot: Slot, seed: int) -> Slot:
    """A copy of `slot` that keeps its x0 prediction and draws fresh noise at the level its latents are at."""
    assert slot.x0 is not None
    alpha = denoiser.alphas[denoiser.timestep(slot.step)]
    noise = torch.randn(slot.latents.shape, generator=torch.Generator().manual_seed(seed)).to(slot.latents.device)
    latents = alpha.sqrt() * slot.x0 + (1 - alpha).sqrt() * noise
    return replace(slot, latents=latents, extra=dict(slot.extra))


def _finish(run: Run, group: _Group) -> bool:
    """Judge the survivors; the best one is the product's image. Returns whether the judge accepted it."""
    images, p, labels = run.judge_slots(group.particles)
    best = int(torch.argmax(p))
    accepted = float(p[best]) >= run.tau
    for k, slot in enumerate(group.particles):
        passed = float(p[k]) >= run.tau
        status = ("accepted" if passed else "rejected") if k == best else ("surplus" if passed else "rejected")
        run.record(slot, status, images[k], float(p[k]), labels[k])
    return accepted
