from dataclasses import dataclass
from itertools import pairwise

import pytest
import torch

from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import (
    Attempt,
    RecurrentConfig,
    RunStats,
    cumulative_by_attempt,
    judge_on_generated,
    recurrent_generate,
    summarise,
    whole_batch_generate,
)

POOL = [
    PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1),
    PromptConfig(prompt="front view of a product placed on a white desktop, grey walls"),
]


@dataclass
class Verdict:
    labels: list
    p_available: torch.Tensor


class StubJudge:
    """Accepts an image when `rule(call, index)` says so; counts its calls."""

    threshold = 0.5  # the judge's own tau, used when the config sets none

    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def __call__(self, images, products, captions):
        self.calls += 1
        p = torch.tensor([1.0 if self.rule(self.calls, i) else 0.0 for i in range(len(images))])
        return Verdict(["available" if v else "space_mismatch" for v in p.tolist()], p)


class CountingDenoiser(Denoiser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def advance(self, slots):
        self.batches.append(len(slots))
        super().advance(slots)


@pytest.fixture(scope="module")
def components(make_components):
    return make_components(seed=2)


@pytest.fixture(scope="module")
def products():
    return held_out_products(5, seed=3)


def _cfg(**kw) -> RecurrentConfig:
    return RecurrentConfig(batch_size=3, max_attempts=3, steps=3, guidance_scale=2.0, **kw)


def test_everything_rejected_means_max_attempts_each(components, products) -> None:
    stats = recurrent_generate(
        Denoiser(components, steps=3), StubJudge(lambda c, i: False), products, POOL, _cfg(), progress=False
    )
    assert len(stats.attempts) == 5 * 3 and all(a.status == "rejected" for a in stats.attempts)
    assert stats.unet_evals == 5 * 3 * 3
    summary = summarise(stats, 5, 3)
    assert summary["abandoned_share"] == 1.0 and summary["available_rate_first_rfnet"] == 0.0
    assert all(a.reviewer_label is not None for a in stats.attempts)  # the reviewer sees every finished image


def test_refilling_keeps_the_batch_full(components, products) -> None:
    denoiser = CountingDenoiser(components, steps=3)
    stats = recurrent_generate(denoiser, StubJudge(lambda c, i: c % 2 == 0), products, POOL, _cfg(), progress=False)
    total = sum(denoiser.batches)
    assert total == stats.unet_evals
    # the batch is full while three products are unfinished; after that it only shrinks, one finished product
    # at a time (a rejected image's retry takes its slot at once)
    first_partial = next(k for k, b in enumerate(denoiser.batches) if b < 3)
    assert all(b == 3 for b in denoiser.batches[:first_partial])
    tail = denoiser.batches[first_partial:]
    assert all(a >= b for a, b in pairwise(tail))


def test_first_attempts_accepted_and_the_attempt_curve(components, products) -> None:
    stats = recurrent_generate(
        Denoiser(components, steps=3), StubJudge(lambda c, i: True), products, POOL, _cfg(), progress=False
    )
    assert [a.attempt for a in stats.attempts] == [1] * 5 and stats.unet_evals == 5 * 3
    assert cumulative_by_attempt(stats, 5, 3) == [1.0, 1.0, 1.0]


def test_early_rejection_stops_slots_at_the_check(components, products) -> None:
    cfg = _cfg(early_reject=True, early_step=1, early_threshold=0.5)
    stats = recurrent_generate(
        Denoiser(components, steps=3), StubJudge(lambda c, i: False), products, POOL, cfg, progress=False
    )
    assert all(a.status == "aborted" and a.step_reached == 1 for a in stats.attempts)
    assert stats.unet_evals == 5 * 3 * 1


def test_early_rejection_stops_only_the_sample_predicted_to_fail(components, products) -> None:
    """One batch of three; at the first early check (the judge's first call) only the middle sample looks bad:
    it alone stops at the check, and its retry takes the freed slot while the others run on."""
    cfg = _cfg(early_reject=True, early_step=1, early_threshold=0.5)
    judge = StubJudge(lambda call, i: not (call == 1 and i == 1))
    stats = recurrent_generate(Denoiser(components, steps=3), judge, products[:3], POOL, cfg, progress=False)
    status = {(a.product, a.attempt): (a.status, a.step_reached) for a in stats.attempts}
    assert status == {
        (products[0].key, 1): ("accepted", 3),
        (products[1].key, 1): ("aborted", 1),
        (products[1].key, 2): ("accepted", 3),
        (products[2].key, 1): ("accepted", 3),
    }
    assert stats.unet_evals == 1 + 3 * 3


@pytest.mark.parametrize("next_prompt", [True, False])
def test_retries_draw_new_seeds_and_take_the_next_prompt_when_configured(components, products, next_prompt) -> None:
    pool = [PromptConfig(prompt="on an oak desktop"), PromptConfig(prompt="on a marble counter")]
    cfg = RecurrentConfig(batch_size=2, max_attempts=3, steps=1, next_prompt_on_retry=next_prompt)
    stats = recurrent_generate(
        Denoiser(components, steps=1), StubJudge(lambda c, i: False), products[:2], pool, cfg, progress=False
    )
    assert len(stats.attempts) == 2 * 3
    assert len({a.seed for a in stats.attempts}) == 2 * 3  # no two attempts share their noise
    for index, product in enumerate(products[:2]):
        attempts = sorted((a for a in stats.attempts if a.product == product.key), key=lambda a: a.attempt)
        assert [a.attempt for a in attempts] == [1, 2, 3]
        shift = [k if next_prompt else 0 for k in range(3)]
        assert [a.prompt for a in attempts] == [pool[(index + s) % 2].prompt for s in shift]


def test_whole_batch_runs_the_same_jobs(components, products) -> None:
    """Same products, attempts, seeds and prompts under both schedulers: their results pair up."""
    refill = recurrent_generate(
        Denoiser(components, steps=3), StubJudge(lambda c, i: False), products, POOL, _cfg(), progress=False
    )
    whole = whole_batch_generate(
        Denoiser(components, steps=3), StubJudge(lambda c, i: False), products, POOL, _cfg(), progress=False
    )

    def key(a):
        return (a.product, a.attempt, a.seed, a.prompt)

    assert sorted(map(key, refill.attempts)) == sorted(map(key, whole.attempts))
    assert refill.unet_evals == whole.unet_evals


def test_tau_is_the_judges_own_unless_the_config_sets_one(components, products) -> None:
    judge = StubJudge(lambda call, i: False)  # p = 0 for every image
    judge.threshold = 0.0  # a judge calibrated to accept everything
    own = recurrent_generate(Denoiser(components, steps=2, guidance_scale=2.0), judge, products, POOL, _cfg())
    assert all(a.status == "accepted" and a.attempt == 1 for a in own.attempts)
    strict = recurrent_generate(
        Denoiser(components, steps=2, guidance_scale=2.0), judge, products, POOL, _cfg(threshold=0.5)
    )
    assert not any(a.status == "accepted" for a in strict.attempts)


def test_cumulative_rates_by_the_judge_and_by_the_reviewer() -> None:
    def attempt(product: str, k: int, status: str, reviewer: str) -> Attempt:
        return Attempt(product, k, k, "p", status, 3, 0.9, "available", reviewer, 0.0)

    stats = RunStats(
        [
            attempt("a", 1, "accepted", "available"),
            attempt("b", 1, "rejected", "size_mismatch"),
            attempt("b", 2, "accepted", "space_mismatch"),  # accepted, but the reviewer disagrees
            attempt("c", 1, "rejected", "available"),
            attempt("c", 2, "accepted", "available"),
        ],
        unet_evals=15,
        seconds=1.0,
        scheduler="plain",
    )
    assert cumulative_by_attempt(stats, 4, 3) == [0.25, 0.75, 0.75]
    assert cumulative_by_attempt(stats, 4, 3, reviewer=True) == [0.25, 0.5, 0.5]
    summary = summarise(stats, 4, 3)
    assert summary["final_available_rate_reviewer"] == 0.5 and summary["reviewer_agrees_with_accepts"] == 2 / 3


def test_the_judge_on_generated_attempts_against_the_reviewer() -> None:
    def attempt(p: float, status: str, label: str | None) -> Attempt:
        return Attempt("p", 1, 0, "", status, 20, p, "available", label, 0.0)

    attempts = [
        attempt(0.9, "accepted", "available"),
        attempt(0.8, "accepted", "size_mismatch"),
        attempt(0.7, "rejected", "available"),
        attempt(0.1, "rejected", "space_mismatch"),
        attempt(0.05, "aborted", None),  # stopped early: no finished image to judge
    ]
    figures = judge_on_generated(attempts)
    assert figures["judged_attempts"] == 4
    assert figures["judge_precision_generated"] == 0.5  # one of its two accepts is available
    assert figures["judge_auc_generated"] == pytest.approx(0.75)  # 3 of the 4 (available, other) pairs ordered
    one_kind = judge_on_generated([attempt(0.9, "accepted", "available")])
    assert one_kind["judge_auc_generated"] != one_kind["judge_auc_generated"]  # NaN: no pair to order
