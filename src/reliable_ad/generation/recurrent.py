"""Recurrent Generation: generate, judge, regenerate what the judge rejects, until accepted or out of attempts.

Two schedulers over the same jobs (same products, seeds and prompts, so their results pair up):

- ``refill`` (the default): a batch of slots; a slot whose job ends (accepted, rejected, or aborted early)
  takes the next job at once, so the batch stays full. With early rejection a slot is scored at a calibrated
  step (the judge on its x0 prediction, the probe on its activations, or both) and a slot predicted to fail
  stops there, per sample, not per batch.
- ``whole_batch``: the simple loop for comparison: products go in groups of a batch; the group's images are
  generated and judged together, and the group's rejected products are regenerated together, round by
  round, before the next group starts.

Every attempt is recorded (product, attempt, seed, prompt, step reached, judge output and, where the product's
source has people at hand (the embedded world's reviewer), their label): that table is also the queue for human
review.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from reliable_ad.data.products import Product
from reliable_ad.generation.config import RecurrentConfig
from reliable_ad.generation.denoise import Denoiser, Job, Slot
from reliable_ad.generation.probe import Probe
from reliable_ad.generation.prompts import PromptConfig, pick_entry
from reliable_ad.generation.scores import Scorer
from reliable_ad.judge import Judge
from reliable_ad.labels import AVAILABLE


@dataclass
class Attempt:
    product: str
    attempt: int
    seed: int
    prompt: str
    status: str  # accepted, rejected, aborted
    step_reached: int
    p_available: float
    judge_label: str
    reviewer_label: str | None
    wall_s: float  # since the run started, when the attempt ended
    image: NDArray[np.uint8] | None = None

    def row(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "image"}


@dataclass
class RunStats:
    attempts: list[Attempt]
    unet_evals: int  # slot-steps (each a guided UNet + ControlNet evaluation of one image)
    seconds: float
    scheduler: str
    unet_calls: int = 0  # batched forward passes: the cost on a device where a call costs the same at any fill
    check_overhead: float = float("nan")  # an early check's cost as a share of one UNet evaluation


def job_for(product: Product, index: int, attempt: int, pool: Sequence[PromptConfig], cfg: RecurrentConfig) -> Job:
    """The job of a product's attempt: its seed and prompt are fixed by (run seed, product index, attempt)."""
    seed = cfg.seed * 1_000_003 + index * 101 + attempt
    entry = pick_entry(pool, index + (attempt - 1 if cfg.next_prompt_on_retry else 0), seed)
    prompt = entry.render(np.random.default_rng(seed))
    return Job(
        product.key, attempt, seed, prompt, product.rgba, product.caption, entry.negative_prompt, product.reviewer
    )


def acceptance_threshold(cfg: RecurrentConfig, judge: Judge) -> float:
    """tau: the configured one, else the judge's own (calibrated with the model on held-out rows)."""
    return judge.threshold if cfg.threshold is None else cfg.threshold


class Run:
    """Shared bookkeeping of both schedulers: judging finished or early-checked slots and recording them."""

    def __init__(
        self, denoiser: Denoiser, judge: Judge, cfg: RecurrentConfig, keep_images: bool, scorer: Scorer | None = None
    ) -> None:
        self.denoiser, self.judge, self.cfg, self.keep_images, self.scorer = denoiser, judge, cfg, keep_images, scorer
        self.tau = acceptance_threshold(cfg, judge)
        self.attempts: list[Attempt] = []
        self.unet_evals = 0
        self.unet_calls = 0
        self.started = time.perf_counter()

    def stats(self, scheduler: str) -> RunStats:
        seconds = time.perf_counter() - self.started
        overhead = self.scorer.overhead() if self.scorer is not None else float("nan")
        return RunStats(self.attempts, self.unet_evals, seconds, scheduler, self.unet_calls, overhead)

    def step(self, slots: list[Slot]) -> None:
        if self.scorer is not None:
            self.scorer.advance(slots)
        else:
            self.denoiser.advance(slots)
        self.unet_evals += len(slots)
        self.unet_calls += 1

    @torch.no_grad()
    def judge_slots(self, slots: list[Slot]) -> tuple[list[NDArray[np.uint8]], torch.Tensor, list[str]]:
        images = self.denoiser.images(torch.cat([s.latents for s in slots]), slots)
        out = self.judge(images, [s.job.product for s in slots], [s.job.caption for s in slots])
        return images, out.p_available, out.labels

    def record(self, slot: Slot, status: str, image: NDArray[np.uint8] | None, p: float, label: str) -> Attempt:
        attempt = Attempt(
            product=slot.job.key,
            attempt=slot.job.attempt,
            seed=slot.job.seed,
            prompt=slot.job.prompt,
            status=status,
            step_reached=slot.step,
            p_available=p,
            judge_label=label,
            reviewer_label=(
                slot.job.reviewer(image) if slot.job.reviewer and image is not None and status != "aborted" else None
            ),
            wall_s=time.perf_counter() - self.started,
            image=image if self.keep_images else None,
        )
        self.attempts.append(attempt)
        return attempt

    def finish(self, slots: list[Slot]) -> list[tuple[Slot, bool]]:
        """Judge finished slots; returns (slot, accepted)."""
        images, p, labels = self.judge_slots(slots)
        results = []
        for k, slot in enumerate(slots):
            accepted = float(p[k]) >= self.tau
            self.record(slot, "accepted" if accepted else "rejected", images[k], float(p[k]), labels[k])
            results.append((slot, accepted))
        return results

    def early_check(self, slots: list[Slot]) -> list[Slot]:
        """Score slots at the early step; returns the slots that were aborted (recorded with their score)."""
        assert self.scorer is not None
        p = self.scorer.scores(slots, self.cfg.early_step)
        aborted = []
        for k, slot in enumerate(slots):
            if float(p[k]) < self.cfg.early_threshold:
                self.record(slot, "aborted", None, float(p[k]), "")
                aborted.append(slot)
        return aborted


def recurrent_generate(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: RecurrentConfig,
    keep_images: bool = False,
    progress: bool = True,
    probe: Probe | None = None,
) -> RunStats:
    """Slot-refilling recurrent generation (optionally with early rejection by `cfg.early_by`; the probe ones need
    `probe`)."""
    scorer = Scorer(denoiser, judge, cfg.early_by, probe, [cfg.early_step]) if cfg.early_reject else None
    try:
        return _refill(Run(denoiser, judge, cfg, keep_images, scorer), products, pool, progress)
    finally:
        if scorer is not None:
            scorer.close()


def _refill(run: Run, products: Sequence[Product], pool: Sequence[PromptConfig], progress: bool) -> RunStats:
    denoiser, cfg = run.denoiser, run.cfg
    index = {p.key: i for i, p in enumerate(products)}
    pending: deque[Job] = deque(job_for(p, i, 1, pool, cfg) for i, p in enumerate(products))
    slots: list[Slot] = []
    bar = tqdm(total=len(products), desc="recurrent", unit="product", disable=not progress)

    def retry_or_close(job: Job, accepted: bool) -> None:
        if not accepted and job.attempt < cfg.max_attempts:
            i = index[job.key]
            pending.appendleft(job_for(products[i], i, job.attempt + 1, pool, cfg))
        else:
            bar.update(1)

    while pending or slots:
        while pending and len(slots) < cfg.batch_size:
            slots.append(denoiser.start(pending.popleft()))
        run.step(slots)
        if cfg.early_reject:
            checking = [s for s in slots if s.step == cfg.early_step and not denoiser.done(s)]
            for slot in run.early_check(checking) if checking else []:
                slots.remove(slot)
                retry_or_close(slot.job, accepted=False)
        finished = [s for s in slots if denoiser.done(s)]
        for slot, accepted in run.finish(finished) if finished else []:
            slots.remove(slot)
            retry_or_close(slot.job, accepted)
    bar.close()
    return run.stats("refill+early" if cfg.early_reject else "refill")


def whole_batch_generate(
    denoiser: Denoiser,
    judge: Judge,
    products: Sequence[Product],
    pool: Sequence[PromptConfig],
    cfg: RecurrentConfig,
    keep_images: bool = False,
    progress: bool = True,
) -> RunStats:
    """The comparison loop: groups of a batch, each regenerated together until done, no refilling."""
    run = Run(denoiser, judge, cfg, keep_images)
    bar = tqdm(total=len(products), desc="whole batch", unit="product", disable=not progress)
    for start in range(0, len(products), cfg.batch_size):
        group = list(range(start, min(len(products), start + cfg.batch_size)))
        attempt = 1
        while group:
            slots = [denoiser.start(job_for(products[i], i, attempt, pool, cfg)) for i in group]
            while not denoiser.done(slots[0]):
                run.step(slots)
            accepted = {slot.job.key for slot, ok in run.finish(slots) if ok}
            still = [i for i in group if products[i].key not in accepted]
            bar.update(len(group) - len(still) if attempt < cfg.max_attempts else len(group))
            group = still if attempt < cfg.max_attempts else []
            attempt += 1
    bar.close()
    return run.stats("whole_batch")


def summarise(stats: RunStats, products: int, max_attempts: int) -> dict[str, float]:
    """The figures of one run: first-attempt available rate, attempts and UNet evaluations per accept..."""
    attempts = stats.attempts
    accepted = [a for a in attempts if a.status == "accepted"]
    first = [a for a in attempts if a.attempt == 1 and a.status != "aborted"]
    first_accepted = {a.product for a in attempts if a.attempt == 1 and a.status == "accepted"}
    reviewed_first = [a for a in attempts if a.attempt == 1 and a.reviewer_label is not None]
    finals = {a.product: a for a in accepted}
    reviewer_final = [a.reviewer_label == AVAILABLE for a in finals.values() if a.reviewer_label is not None]
    return {
        "products": products,
        "accepted": len(accepted),
        "abandoned_share": 1.0 - len(accepted) / max(1, products),
        "available_rate_first_rfnet": len(first_accepted) / max(1, products),
        "available_rate_first_reviewer": (
            float(np.mean([a.reviewer_label == "available" for a in reviewed_first]))
            if reviewed_first
            else float("nan")
        ),
        "judged_first_attempts": len(first),
        "reviewer_agrees_with_accepts": float(np.mean(reviewer_final)) if reviewer_final else float("nan"),
        "final_available_rate_reviewer": (  # products whose accepted image the reviewer calls available
            sum(reviewer_final) / max(1, products) if reviewer_final else float("nan")
        ),
        "mean_attempts": float(np.mean([a.attempt for a in accepted])) if accepted else float("nan"),
        # what a production team pays per image a person would use: every attempt made, over those accepts
        "attempts_per_reviewer_available_accept": (
            len([a for a in attempts if a.status != "aborted"]) / sum(reviewer_final)
            if sum(reviewer_final)
            else float("nan")
        ),
        "attempts_total": len(attempts),
        "unet_evals": stats.unet_evals,
        "unet_evals_per_accept": stats.unet_evals / len(accepted) if accepted else float("nan"),
        "unet_calls": stats.unet_calls,
        "accepts_per_unet_call": len(accepted) / stats.unet_calls if stats.unet_calls else float("nan"),
        "seconds": stats.seconds,
        "seconds_per_accept": stats.seconds / len(accepted) if accepted else float("nan"),
        "accepts_per_min": 60.0 * len(accepted) / max(stats.seconds, 1e-9),
        "max_attempts": max_attempts,
        # cost per usable image: what production pays per accepted image that a person would use
        "usable_images": sum(reviewer_final),
        "unet_evals_per_usable": stats.unet_evals / sum(reviewer_final) if sum(reviewer_final) else float("nan"),
        "seconds_per_usable": stats.seconds / sum(reviewer_final) if sum(reviewer_final) else float("nan"),
        "check_overhead": stats.check_overhead,
    }


def judge_on_generated(attempts: Sequence[Attempt]) -> dict[str, float]:
    """How well the judge agrees with the reviewer on the generator's own images (every finished attempt): ROC AUC
    of p(available) for the reviewer's "available", and the share of the judge's accepts the reviewer calls
    available. This, not macro-F1 on renderings, is what recurrent generation and RFFT rely on."""
    from sklearn.metrics import roc_auc_score

    judged = [a for a in attempts if a.status != "aborted" and a.reviewer_label is not None]
    truth = np.array([a.reviewer_label == AVAILABLE for a in judged])
    scores = np.array([a.p_available for a in judged])
    accepted = np.array([a.status == "accepted" for a in judged])
    both_kinds = truth.any() and not truth.all()
    return {
        "judge_auc_generated": float(roc_auc_score(truth, scores)) if both_kinds else float("nan"),
        "judge_precision_generated": float(truth[accepted].mean()) if accepted.any() else float("nan"),
        "judged_attempts": len(judged),
    }


def cumulative_by_attempt(stats: RunStats, products: int, max_attempts: int, reviewer: bool = False) -> list[float]:
    """Share of products with an accepted image after k attempts, k = 1..max_attempts; with `reviewer`, with an
    accepted image that the reviewer also calls available (what the products really got)."""
    best: dict[str, int] = {}
    for a in stats.attempts:
        if a.status == "accepted" and (not reviewer or a.reviewer_label == AVAILABLE):
            best[a.product] = min(best.get(a.product, a.attempt), a.attempt)
    return [sum(1 for v in best.values() if v <= k) / max(1, products) for k in range(1, max_attempts + 1)]
