import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from reliable_ad.data.synth.products import held_out_products
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.config import PretrainConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import load_prompt_pool
from reliable_ad.generation.recurrent import job_for
from reliable_ad.models.config import TinyGeneratorConfig
from reliable_ad.models.generator import GeneratorComponents, load_components
from reliable_ad.stats import paired_bootstrap
from reliable_ad.training.pretrain_generator import (
    denoising_loss,
    examples_of,
    export_generator,
    pretrain_tiny_generator,
)


def _cfg(**kw) -> PretrainConfig:
    base = {
        "model": TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16)),
        "vae_steps": 2,
        "vae_batch": 4,
        "steps": 3,
        "batch": 4,
        "checkpoint_every": 2,
        "eval_every": 100,
        "eval_samples": 4,
        "eval_steps": 2,
        "threads": 1,
    }
    return PretrainConfig(**{**base, **kw})


def test_pretraining_resumes_and_exports_a_loadable_generator(tmp_path) -> None:
    card = pretrain_tiny_generator(_cfg(), tmp_path / "run")
    assert card["steps"] == 3 and 0.0 <= card["reviewer_available_rate"] <= 1.0
    assert json.loads((tmp_path / "run" / "model_card.json").read_text())["synth_seed"] == 1000
    assert (tmp_path / "run" / "sample_grid.png").exists()
    components = load_components(tmp_path / "run" / "model")
    assert components.vae.config.scaling_factor != 1.0  # measured on the VAE's latents
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()

    again = pretrain_tiny_generator(_cfg(), tmp_path / "run")  # resumes at the last checkpoint: nothing to redo
    assert again["steps"] == 3
    assert (tmp_path / "run" / "train_log.jsonl").read_text().splitlines() == log

    earlier = export_generator(_cfg(), tmp_path / "run" / "checkpoints" / "step-00000002", tmp_path / "exported")
    assert earlier["steps"] == 2 and (tmp_path / "exported" / "model" / "controlnet").exists()


# What every method that updates weights rests on: plain denoising fine-tuning of the shipped ControlNet on
# images people would accept does not make the generator worse by the reviewer.
#
# The pretraining's own mix is half defective by design (RF1M-synth's classes), and continued training on it
# teaches those defects more faithfully than the shipped EMA weights make them: the reviewer's rate falls
# (benchmarks/README.md). On available renders alone the rate holds; that is what this test keeps true.


ROOT = Path(__file__).parents[2]


def _available(components: GeneratorComponents, products: list, pool: list) -> np.ndarray:
    denoiser = Denoiser(components, 20, 7.5)
    jobs = [job_for(p, i, 1, pool, RecurrentConfig()) for i, p in enumerate(products)]
    verdicts = []
    for start in range(0, len(jobs), 48):
        chunk = jobs[start : start + 48]
        slots = [denoiser.start(job) for job in chunk]
        while not denoiser.done(slots[0]):
            denoiser.advance(slots)
        images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
        verdicts += [j.reviewer(im) == "available" for im, j in zip(images, chunk, strict=True)]
    return np.array(verdicts, float)


@pytest.mark.slow
def test_fine_tuning_the_controlnet_on_available_renders_keeps_the_reviewers_rate() -> None:
    torch.manual_seed(0)
    components = load_components(ROOT / "models/tiny-generator/model")
    pool = load_prompt_pool(ROOT / "configs/prompts_embedded.json")
    products = held_out_products(96, 777)
    base = _available(components, products, pool)
    for module in (components.unet, components.vae, components.text_encoder):
        module.requires_grad_(False).eval()
    tuned = components.controlnet.train()
    average = copy.deepcopy(tuned).requires_grad_(False)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=3e-5)
    scheduler = DDPMScheduler.from_config(components.scheduler.config)
    world = PretrainConfig().synth.model_copy(update={"class_mix": {"available": 1.0}})
    rng = np.random.default_rng(0)
    for step in range(200):
        samples = [draw_sample(world, 10**7 + 16 * step + i) for i in range(16)]
        loss = denoising_loss(components, scheduler, examples_of(samples), 0.1, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for a, w in zip(average.parameters(), tuned.parameters(), strict=True):
                a.lerp_(w, 0.01)
    components.controlnet = average.eval()
    after = _available(components, products, pool)
    change = paired_bootstrap(after, base, resamples=1000)
    # measured (4 seeds x 96 products): 47.1% -> 48.4%; on the pretraining's mix the same update lost 3-14 points
    assert change.delta >= -0.05, f"reviewer rate {base.mean():.3f} -> {after.mean():.3f}"
