from collections import Counter

import pytest
import torch
from pydantic import ValidationError

from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig, SteeringConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for, recurrent_generate, summarise
from reliable_ad.generation.steering import SteeringError, _branch, _picks, round_cost, steer_generate
from reliable_ad.judge import JudgeOutput

POOL = [PromptConfig(prompt="front view of a product placed on a marble counter, {} walls", flag=1)]


class SeedJudge:
    """p(available) from the image (its mean), stable across calls: a particle's score and verdict follow it."""

    threshold = 0.5
    labels = ("available", "space_mismatch")

    def __init__(self, accept):
        self.accept, self.calls = accept, []

    def __call__(self, images, products, captions):
        self.calls.append(len(images))
        p = torch.tensor([float(self.accept(float(image.mean()))) for image in images])
        return JudgeOutput(["available" if v else "space_mismatch" for v in p.tolist()], p, p[:, None])


@pytest.fixture(scope="module")
def components(make_components):
    return make_components(seed=5)


@pytest.fixture(scope="module")
def products():
    return held_out_products(3, seed=21)


RC = RecurrentConfig(batch_size=8, max_attempts=3, steps=5, guidance_scale=2.0)
X0 = SteeringConfig(particles=3, resample_at=[0.4], survivors=[1], score="x0_judge")


def test_fewer_than_one_particle_is_refused() -> None:
    with pytest.raises(ValidationError, match="particles"):
        SteeringConfig(particles=0)
    with pytest.raises(ValidationError, match="one population size per resample_at"):
        SteeringConfig(resample_at=[0.2, 0.5], survivors=[1])
    with pytest.raises(ValidationError, match=r"survivors \[0\]"):
        SteeringConfig(survivors=[0])


def test_resample_points_beyond_the_schedule_are_refused_and_defaults_shrink_to_fit() -> None:
    with pytest.raises(ValidationError, match=r"steering\.resample_at"):
        GenerationEvalConfig(recurrent=RecurrentConfig(steps=2), steering=SteeringConfig())
    with pytest.raises(ValidationError, match="must increase"):
        GenerationEvalConfig(steering=SteeringConfig(resample_at=[0.2, 0.21], survivors=[2, 1]))
    with pytest.raises(ValidationError, match=r"probe_steps \[12\] lie outside the 10-step schedule"):
        GenerationEvalConfig(recurrent=RecurrentConfig(steps=10), probe_steps=[4, 12])
    short = GenerationEvalConfig(recurrent=RecurrentConfig(steps=7))
    assert short.probe_steps == [2, 4, 6] and short.steers
    assert not GenerationEvalConfig(recurrent=RecurrentConfig(steps=2)).steers


def test_steering_with_a_judge_lacking_available_is_refused(components, products) -> None:
    judge = SeedJudge(lambda m: True)
    judge.labels = ("usable", "unusable")
    with pytest.raises(SteeringError, match="lack 'available'"):
        steer_generate(Denoiser(components, steps=5), judge, products, POOL, RC, X0, progress=False)


def test_a_round_costs_each_stretch_at_its_population() -> None:
    assert round_cost(SteeringConfig(particles=4, resample_at=[0.2], survivors=[1]), 20) == 4 * 4 + 16
    assert round_cost(SteeringConfig(particles=4, resample_at=[0.2, 0.5], survivors=[2, 1]), 20) == 16 + 12 + 10


def test_the_best_particles_survive_and_a_repeated_pick_branches(components, products) -> None:
    scores = torch.tensor([0.2, 0.9, 0.5])
    assert _picks(scores, 2, 0.0, seed=0) == [1, 2]
    assert _picks(scores, 4, 0.0, seed=0) == [1, 2, 0, 1]
    drawn = Counter(k for seed in range(200) for k in _picks(scores, 3, 1.0, seed=seed))
    assert drawn[1] > drawn[2] > drawn[0]
    denoiser = Denoiser(components, steps=5, guidance_scale=2.0)
    slot = denoiser.start(job_for(products[0], 0, 1, POOL, RC))
    denoiser.advance([slot])
    copy = _branch(denoiser, slot, seed=7)
    assert copy.job is slot.job and copy.step == slot.step and not torch.equal(copy.latents, slot.latents)
    denoiser.advance([slot, copy])
    assert not torch.allclose(copy.x0, slot.x0)


def test_steering_keeps_one_image_per_product_within_recurrent_generations_budget(components, products) -> None:
    """Three particles from the seeds of attempts 1-3, one survivor after step 2 of 5: 3*2 + 3 = 9 evaluations a
    round, so 15 // 9 = 1 round per product; the judge's verdict at the end decides."""
    judge = SeedJudge(lambda mean: mean > 0.0)  # every image: the best survivor is accepted
    stats = steer_generate(
        Denoiser(components, steps=5, guidance_scale=2.0), judge, products, POOL, RC, X0, False, False
    )
    assert stats.scheduler == "steering" and stats.unet_evals == 3 * 9
    for index, product in enumerate(products):
        mine = [a for a in stats.attempts if a.product == product.key]
        assert sorted(a.seed for a in mine) == sorted(job_for(product, index, k, POOL, RC).seed for k in (1, 2, 3))
        assert Counter(a.status for a in mine) == {"aborted": 2, "accepted": 1}
        assert all(a.step_reached == 2 for a in mine if a.status == "aborted")
    summary = summarise(stats, len(products), RC.max_attempts)
    assert summary["accepted"] == 3 and summary["unet_evals_per_accept"] == 9


def test_a_product_none_of_whose_survivors_pass_starts_another_round(components, products) -> None:
    """Nothing is accepted: rounds = 15 // 9 = 1 with X0; with one particle and no shrink, a round costs 5, so a
    product gets three rounds, with the seeds of attempts 1, 2 and 3 (recurrent generation's)."""
    single = SteeringConfig(particles=1, resample_at=[0.4], survivors=[1], score="x0_judge")
    denoiser = Denoiser(components, steps=5, guidance_scale=2.0)
    stats = steer_generate(denoiser, SeedJudge(lambda m: False), products, POOL, RC, single, progress=False)
    plain = recurrent_generate(denoiser, SeedJudge(lambda m: False), products, POOL, RC, progress=False)
    assert stats.unet_evals == plain.unet_evals == 3 * 3 * 5
    key = sorted((a.product, a.attempt, a.seed, a.status) for a in stats.attempts)
    assert key == sorted((a.product, a.attempt, a.seed, a.status) for a in plain.attempts)
