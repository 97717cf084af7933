import numpy as np
import pytest
import torch

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.denoise import Denoiser, Job
from reliable_ad.generation.sampler import generate


@pytest.fixture(scope="module")
def components(make_components):
    return make_components(seed=1)


def _jobs(n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        sample = draw_sample(SynthConfig(), i)
        jobs.append(Job(f"p{i}", 1, 100 + i, sample.rendering.prompt, sample.rendering.product, sample.product.title))
    return jobs


def _run(denoiser: Denoiser, jobs: list[Job]) -> list[np.ndarray]:
    slots = [denoiser.start(job) for job in jobs]
    while not denoiser.done(slots[0]):
        denoiser.advance(slots)
    with torch.no_grad():
        images = Denoiser.paste(denoiser.decode(torch.cat([s.latents for s in slots])), slots)
    return Denoiser.to_uint8(images)


def test_slots_match_the_stock_pipeline(components) -> None:
    jobs = _jobs(2)
    ours = _run(Denoiser(components, steps=4, guidance_scale=5.0), jobs)
    stock = generate(
        components,
        [j.product for j in jobs],
        [j.prompt for j in jobs],
        [j.seed for j in jobs],
        steps=4,
        guidance_scale=5.0,
    )
    for a, b in zip(ours, stock, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_slots_at_different_steps_share_a_batch(components) -> None:
    """A slot's result does not depend on which other slots, at which steps, ran beside it."""
    denoiser = Denoiser(components, steps=4, guidance_scale=5.0)
    jobs = _jobs(2)
    alone = _run(denoiser, [jobs[1]])[0]
    first = denoiser.start(jobs[0])
    denoiser.advance([first])
    denoiser.advance([first])
    second = denoiser.start(jobs[1])
    while not denoiser.done(second):
        denoiser.advance([s for s in (first, second) if not denoiser.done(s)])
    with torch.no_grad():
        image = Denoiser.to_uint8(Denoiser.paste(denoiser.decode(second.latents), [second]))[0]
    assert np.abs(image.astype(int) - alone.astype(int)).max() <= 1
