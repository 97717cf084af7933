"""RFFT: fine-tune the ControlNet with RFNet's feedback and a regulariser (the paper's Reliable Feedback
Fine-Tuning). Only the ControlNet learns; the UNet, VAE, text encoder and the judge are frozen.

Each micro-batch: DDIM-sample without gradients, with the ControlNet being tuned, down to a step drawn among
the last K; take that step with gradients, predict the clean latents (x0), decode them, paste the product
back through its alpha and let RFNet judge: the feedback loss is the cross-entropy of its output toward
"available". The regulariser keeps the model close to where it started:

- ``cc`` (Consistent Condition, the paper's): the text-guidance direction
  eps(x_t, prompt, control) - eps(x_t, control) of the tuned model stays close (L2) to the frozen one's;
- ``kl``: the guided noise prediction stays close to the frozen one's (the KL between the two Gaussian
  DDIM transitions is proportional to it);
- ``none``: feedback alone (the paper: the available rate climbs to 99.8% and backgrounds collapse).

Total loss = feedback + beta * regulariser (+ anchor * the plain denoising loss on available renders).

Every model (the tuned and the frozen ControlNet, UNet, VAE, text encoder, the judge) lives on the
accelerator's device; the denoiser moves its inputs there.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from tqdm import tqdm

from reliable_ad.data.products import Product
from reliable_ad.errors import InputError, UserError
from reliable_ad.generation.config import RecurrentConfig, RFFTConfig
from reliable_ad.generation.denoise import Denoiser, Slot
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for
from reliable_ad.judge import Reward
from reliable_ad.models.generator import load_components
from reliable_ad.training.checkpoint import fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint
from reliable_ad.training.pretrain_generator import Example, denoising_loss

JUDGES_FILE = "rfft_judges.json"  # beside the weights: which judges the ControlNet was tuned against
SNAPSHOTS = "snapshots"  # the ControlNet every `select.every` steps, for the choice by an unoptimised judge


def _freeze(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval().to(device)


def _clear(out: Path) -> None:
    """A fresh run must not leave an earlier run's checkpoints, weights or summary among its own."""
    for name in ("checkpoints", "controlnet", SNAPSHOTS):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "rfft_summary.json").unlink(missing_ok=True)


def _keep_log_until(log: Path, step: int) -> None:
    """Drop the log records of steps after `step`: a resumed run redoes them and logs them again."""
    if log.exists():
        kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(f"{line}\n" for line in kept))


def _batch(products: list[Product], pool: list[PromptConfig], cfg: RFFTConfig, rng: np.random.Generator) -> list[Any]:
    picks = rng.choice(len(products), cfg.batch_size, replace=len(products) < cfg.batch_size)
    recurrent = RecurrentConfig(seed=int(rng.integers(2**31)), next_prompt_on_retry=True)
    return [job_for(products[int(i)], int(i), int(rng.integers(1, 4)), pool, recurrent) for i in picks]


# finished pictures of suitable products (image, cut-out, prompt) by index: what the anchor on renders learns from
Renders = Callable[[list[int]], list[Example]]


def rfft_train(
    cfg: RFFTConfig,
    generator: Path,
    judge: Reward,
    pool: list[PromptConfig],
    out: Path,
    products: list[Product],
    renders: Renders | None = None,
    controlnet: Path | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Fine-tune the generator's ControlNet on `products` (the training products' cut-outs) into
    `out/controlnet` (diffusers format, safetensors, with the config beside it); `resume=False` starts over,
    removing what an earlier run left in `out`. `renders` gives the anchor's finished pictures
    (`anchor_data: renders`)."""
    if cfg.anchor > 0 and cfg.anchor_data == "renders" and renders is None:
        raise InputError(
            "generation.rfft.anchor_data is renders, but the products' source has no finished pictures to anchor "
            "on (a catalog): set anchor_data to accepted"
        )
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    device = accelerator.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    judge.to(device)
    judge.requires_grad_check()
    components = load_components(generator, controlnet)
    for module in (components.unet, components.vae, components.text_encoder):
        _freeze(module, device)
    frozen = _freeze(copy.deepcopy(components.controlnet), device)
    tuned = components.controlnet.train()
    if cfg.gradient_checkpointing:
        tuned.enable_gradient_checkpointing()
        components.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_fp = fingerprint(
        {
            **cfg.model_dump(mode="json", exclude={"threads", "select"}),  # selection does not change training
            "generator": str(generator),
            "controlnet": str(controlnet),
            "judge": judge.describe(),
            "products": [product.key for product in products],
        }
    )
    ckpt_dir, log_path, start = out / "checkpoints", out / "train_log.jsonl", 0
    if not resume and accelerator.is_main_process:
        _clear(out)
    latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        start = load_checkpoint(latest, {"controlnet": tuned}, optimizer, run_fp)["step"]
        accelerator.print(f"resumed from {latest} at step {start}")
    if accelerator.is_main_process:
        _keep_log_until(log_path, start)
    tuned, optimizer = accelerator.prepare(tuned, optimizer)
    components.controlnet = tuned
    denoiser = Denoiser(components, cfg.inference_steps, cfg.guidance_scale)
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    on_policy = cfg.feedback_weight > 0 or cfg.regularizer != "none"
    accepted: list[Example] = []
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=start, desc="rfft", disable=not accelerator.is_main_process)
    for step in range(start, cfg.steps):
        record: dict[str, float] = {"feedback": 0.0, "regularizer": 0.0, "anchor": 0.0, "p_available": 0.0}
        for micro in range(cfg.grad_accum):
            rng = np.random.default_rng([cfg.seed, step, micro, accelerator.process_index])
            with accelerator.autocast():
                if on_policy:
                    slots = [denoiser.start(job) for job in _batch(products, pool, cfg, rng)]
                    index = int(rng.integers(cfg.inference_steps - cfg.last_k, cfg.inference_steps))
                    for _ in range(index):  # the trajectory so far, on-policy, without gradients
                        denoiser.advance(slots)
                    losses = rfft_losses(denoiser, judge, slots, index, frozen, cfg)
                else:  # the anchor alone (an ablation): no trajectory to sample
                    losses = {
                        k: torch.zeros((), device=device) for k in ("feedback", "p_available", "regularizer", "anchor")
                    }
                if cfg.anchor > 0:
                    if cfg.anchor_data == "renders":
                        assert renders is not None  # refused above
                        examples = renders([int(k) for k in rng.integers(0, 10**6, cfg.batch_size)])
                    else:
                        if not accepted or (cfg.anchor_refresh and step % cfg.anchor_refresh == 0 and micro == 0):
                            accepted = accepted_pool(denoiser, judge, products, pool, cfg, step)
                        examples = [accepted[int(k)] for k in rng.integers(0, len(accepted), cfg.batch_size)]
                    losses["anchor"] = denoising_loss(components, noise_scheduler, examples, 0.1, rng)
            total = (
                cfg.feedback_weight * losses["feedback"]
                + cfg.beta * losses["regularizer"]
                + cfg.anchor * losses["anchor"]
            )
            if not torch.isfinite(total):
                raise FloatingPointError(f"non-finite RFFT loss at step {step}; last checkpoint: {latest}")
            accelerator.backward(total / cfg.grad_accum)
            for key in record:
                record[key] += float(losses[key].detach()) / cfg.grad_accum
        accelerator.clip_grad_norm_(tuned.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(feedback=f"{record['feedback']:.3f}", p=f"{record['p_available']:.2f}")
        if accelerator.is_main_process:
            with log_path.open("a") as handle:
                handle.write(
                    json.dumps({"step": step + 1, **record, "elapsed_s": round(time.time() - started, 1)}) + "\n"
                )
            if (step + 1) % cfg.checkpoint_every == 0:
                latest = save_checkpoint(
                    ckpt_dir, {"controlnet": accelerator.unwrap_model(tuned)}, optimizer, step + 1, run_fp
                )
            if cfg.select.every and ((step + 1) % cfg.select.every == 0 or step + 1 == cfg.steps):
                snapshot = out / SNAPSHOTS / f"step-{step + 1:06d}"
                accelerator.unwrap_model(tuned).save_pretrained(snapshot, safe_serialization=True)
    bar.close()
    summary = {
        "steps": cfg.steps,
        "seconds": round(time.time() - started, 1),
        "regularizer": cfg.regularizer,
        "beta": cfg.beta,
        "processes": accelerator.num_processes,
        "resumed_at_step": start,
    }
    if accelerator.is_main_process:
        accelerator.unwrap_model(tuned).save_pretrained(out / "controlnet", safe_serialization=True)
        cfg.save(out / "controlnet")
        (out / "controlnet" / JUDGES_FILE).write_text(json.dumps(judge.describe(), indent=2) + "\n")
        (out / "rfft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def feedback_loss(log_p: torch.Tensor, cfg: RFFTConfig) -> torch.Tensor:
    """The paper's cross-entropy toward "available" (-log p); ``capped`` gives no gradient to an image the
    reward already finds available with p >= cap (ReFL's relu(2 - r) idea): pushing a confident verdict
    further is where a judge's blind spots get exploited."""
    if cfg.reward == "capped":
        return -(log_p * (log_p.detach().exp() < cfg.reward_cap)).mean()
    return -log_p.mean()


def trained_against(controlnet: Path) -> list[str]:
    """The file hashes of the judges a ControlNet was tuned against (none for one RFFT did not make)."""
    path = controlnet / JUDGES_FILE
    if not path.exists():
        return []
    described = json.loads(path.read_text())
    judges = described.get("judges", [described])  # an ensemble lists its members
    return [judge["sha256"] for judge in judges if "sha256" in judge]


@torch.no_grad()
def accepted_pool(
    denoiser: Denoiser, judge: Reward, products: list[Product], prompts: list[PromptConfig], cfg: RFFTConfig, step: int
) -> list[Example]:
    """The current ControlNet's own finished first attempts at `cfg.anchor_pool` training products that the reward
    accepts (p >= its threshold): what the denoising anchor on "accepted" learns from. The judge only picks among
    real samples, so no pixel pattern can be optimised against it (reward-ranked fine-tuning, as RAFT does)."""
    rng = np.random.default_rng([cfg.seed, step, 7])
    recurrent = RecurrentConfig(seed=int(rng.integers(2**31)), next_prompt_on_retry=True)
    picks = rng.choice(len(products), min(cfg.anchor_pool, len(products)), replace=False)
    kept: list[Example] = []
    for start in range(0, len(picks), cfg.batch_size * 4):
        chunk = picks[start : start + cfg.batch_size * 4]
        slots = [denoiser.start(job_for(products[int(i)], int(i), 1, prompts, recurrent)) for i in chunk]
        while not denoiser.done(slots[0]):
            denoiser.advance(slots)
        images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
        p = judge.log_p_available(images, [s.job.product for s in slots], [s.job.caption for s in slots]).exp()
        verdicts = zip(images, slots, (p >= judge.threshold).tolist(), strict=True)
        kept += [Example(image, slot.job.product, slot.job.prompt) for image, slot, ok in verdicts if ok]
    if not kept:
        raise UserError(
            f"the judge accepted none of {len(picks)} samples: no accepted pool to anchor to "
            "(generation.rfft.anchor_data: renders, or more anchor_pool products)"
        )
    return kept


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (reflect-padded), differentiable: what the judge rewards must survive it, so
    pixel-level patterns that fool a CNN (and no person) earn nothing."""
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def rfft_losses(
    denoiser: Denoiser,
    judge: Reward,
    slots: list[Slot],
    index: int,
    frozen: torch.nn.Module,
    cfg: RFFTConfig,
) -> dict[str, torch.Tensor]:
    """Feedback and regulariser losses of one gradient step taken at trajectory step `index`."""
    latents = torch.cat([s.latents for s in slots])
    t = torch.full((len(slots),), denoiser.timestep(index), device=latents.device)
    uncond, text = denoiser.noise_branches(latents, t, slots)
    noise = denoiser.guided(uncond, text)
    images = Denoiser.paste(denoiser.decode(denoiser.x0(latents, noise, t)), slots)
    if cfg.reward_blur > 0:
        images = gaussian_blur(images, cfg.reward_blur)
    log_p = judge.log_p_available(images, [s.job.product for s in slots], [s.job.caption for s in slots], grad=True)
    losses = {
        "feedback": feedback_loss(log_p, cfg),
        "p_available": log_p.detach().exp().mean(),
        "regularizer": torch.zeros((), device=latents.device),
        "anchor": torch.zeros((), device=latents.device),
    }
    if cfg.regularizer != "none":
        with torch.no_grad():
            reference = denoiser.noise_branches(latents, t, slots, controlnet=frozen)
        losses["regularizer"] = regularizer_loss(cfg.regularizer, denoiser, (uncond, text), reference)
    return losses


def regularizer_loss(
    kind: Literal["cc", "kl"],
    denoiser: Denoiser,
    tuned: tuple[torch.Tensor, torch.Tensor],
    frozen: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """How far the tuned model's (unconditional, text) noise predictions moved from the frozen model's:
    ``cc`` compares their text-guidance directions, ``kl`` their guided predictions."""
    (uncond, text), (uncond0, text0) = tuned, frozen
    if kind == "cc":
        return F.mse_loss(text - uncond, text0 - uncond0)
    return F.mse_loss(denoiser.guided(uncond, text), denoiser.guided(uncond0, text0))
