"""Real-size figures: SD1.5-sized inpainting UNet + canny ControlNet + VAE + CLIP text encoder, built from
their published configurations with random weights (nothing is downloaded).

1. one RFFT step (sampling to the gradient step without gradients, one guided step with gradients through
   the ControlNet, x0 decode, paste, judge, backward, AdamW) at batch 4 with gradient checkpointing: seconds
   and peak memory;
2. recurrent-generation images/s at 512 x 512 with 40 DDIM steps: the slot denoiser against the stock
   StableDiffusionControlNetInpaintPipeline on the same products, in the same run;
3. the schedulers on the same products and seeds: slot-refilling recurrent generation, whole-batch
   regeneration, early rejection by the probe and particle steering (accepts per second, UNet evaluations per
   accept), and the probe's overhead per check as a share of a UNet evaluation (timed with and without the
   tap, synchronised). The weights are random, so the judge (a random RFNet at 384 px) accepts at its median
   score and the probe's heads are random: the figures are costs, not qualities.

On a GPU: python benchmarks/real_size.py
On CPU it runs too, slowly: python benchmarks/real_size.py --size 256 --steps 10 --batch 2 --trajectory 4
At tiny size (CPU, a minute): python benchmarks/real_size.py --tiny --skip-rfft
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from common import machine
from reliable_ad.data.cutout import centre_zoom
from reliable_ad.data.products import Product
from reliable_ad.generation.config import RecurrentConfig, RFFTConfig, SteeringConfig
from reliable_ad.generation.denoise import Denoiser, Job, Slot
from reliable_ad.generation.preprocess import control_inputs
from reliable_ad.generation.probe import TAPPED, FeatureTap, Head, Probe
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for, recurrent_generate, summarise, whole_batch_generate
from reliable_ad.generation.scores import capture_advance
from reliable_ad.generation.steering import steer_generate
from reliable_ad.judge import RFNetJudge
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.generator import (
    GeneratorComponents,
    TinyGeneratorConfig,
    build_tiny_components,
    build_tokenizer,
    controlnet_for_inpainting,
    sd15_scheduler,
)
from reliable_ad.models.rfnet import RFNet
from reliable_ad.training.rfft import rfft_losses


def sd15_components(device: torch.device) -> GeneratorComponents:
    """SD1.5 (inpainting) + canny ControlNet + VAE + CLIP ViT-L/14 text encoder, random weights."""
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=9,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            vocab_size=49408,
        )
    )
    controlnet = controlnet_for_inpainting(unet)
    scheduler = sd15_scheduler()
    parts = GeneratorComponents(vae, unet, controlnet, text, build_tokenizer(77), scheduler)
    for module in (parts.vae, parts.unet, parts.controlnet, parts.text_encoder):
        module.to(device)
    return parts


def tiny_components(device: torch.device) -> GeneratorComponents:
    """The shipped tiny generator's architecture with random weights (64 px)."""
    parts = build_tiny_components(TinyGeneratorConfig(unet_channels=(48, 96, 96)))
    for module in (parts.vae, parts.unet, parts.controlnet, parts.text_encoder):
        module.to(device)
    return parts


def products(count: int, size: int) -> list[np.ndarray]:
    rgba = np.zeros((200, 120, 4), np.uint8)
    rgba[20:180, 20:100] = (180, 40, 40, 255)
    return [centre_zoom(rgba, (size, size), 0.5 + 0.05 * (k % 3)) for k in range(count)]


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU (peak allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RAM (peak RSS of the process)"


def rfft_step(parts: GeneratorComponents, args: argparse.Namespace, device: torch.device) -> None:
    cfg = RFFTConfig(batch_size=args.batch, inference_steps=args.trajectory, last_k=1, gradient_checkpointing=True)
    parts.unet.requires_grad_(False)
    parts.vae.requires_grad_(False)
    parts.text_encoder.requires_grad_(False)
    frozen = controlnet_for_inpainting(parts.unet).to(device).requires_grad_(False)
    parts.controlnet.train().enable_gradient_checkpointing()
    parts.unet.enable_gradient_checkpointing()
    judge = RFNetJudge(RFNet(RFNetConfig(image_size=384, vocabulary=["cm"])), device=device)
    optimizer = torch.optim.AdamW(parts.controlnet.parameters(), lr=1e-5)
    denoiser = Denoiser(parts, cfg.inference_steps, cfg.guidance_scale, device=device)
    jobs = [
        Job(f"p{k}", 1, k, "front view of a product placed on a oak desktop", p, "a product, 20 cm")
        for k, p in enumerate(products(args.batch, args.size))
    ]
    for repeat in range(2):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        slots = [denoiser.start(j) for j in jobs]
        for _ in range(cfg.inference_steps - 1):
            denoiser.advance(slots)
        losses = rfft_losses(denoiser, judge, slots, cfg.inference_steps - 1, frozen, cfg, judge.model.available_index)
        (losses["feedback"] + losses["regularizer"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:
            print(
                f"RFFT step, batch {args.batch}, {args.size} px, {cfg.inference_steps}-step trajectory, gradient "
                f"checkpointing: {time.perf_counter() - started:.2f} s, {peak_memory(device)}"
            )


@torch.no_grad()
def generation_speed(parts: GeneratorComponents, args: argparse.Namespace, device: torch.device) -> None:
    parts.controlnet.eval()
    items = products(args.batch, args.size)
    prompt = "front view of a product placed on a oak desktop"
    denoiser = Denoiser(parts, args.steps, 7.5, device=device)
    pipe = parts.pipeline()
    pipe.set_progress_bar_config(disable=True)
    inputs = [control_inputs(p) for p in items]

    def ours() -> None:
        slots = [denoiser.start(Job(f"p{k}", 1, k, prompt, p, "c")) for k, p in enumerate(items)]
        while not denoiser.done(slots[0]):
            denoiser.advance(slots)
        denoiser.decode(torch.cat([s.latents for s in slots]))

    def stock() -> None:
        pipe(
            prompt=[prompt] * len(items),
            image=[Image.fromarray(i.init_image) for i in inputs],
            mask_image=[Image.fromarray(i.inpaint_mask) for i in inputs],
            control_image=[Image.fromarray(i.control_image) for i in inputs],
            height=args.size,
            width=args.size,
            num_inference_steps=args.steps,
            generator=[torch.Generator().manual_seed(k) for k in range(len(items))],
            output_type="np",
        )

    for name, run in (("slot denoiser (recurrent generation)", ours), ("stock diffusers pipeline", stock)):
        run()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(
            f"{name}: {len(items) / seconds:.2f} images/s ({len(items)} images, {args.size} px, {args.steps} DDIM "
            f"steps, guidance 7.5)"
        )


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_probe(parts: GeneratorComponents, denoiser: Denoiser, slot: Slot, steps: list[int]) -> Probe:
    """A probe with random heads at `steps`, as wide as the tap's features on these components."""
    tap = FeatureTap(parts, TAPPED)
    with tap.capture():
        denoiser.advance([replace(slot)])
    width = tap.features().shape[1]
    tap.close()
    generator = torch.Generator().manual_seed(0)
    heads = {
        step: Head(
            torch.zeros(width),
            torch.ones(width),
            torch.randn(width, generator=generator) / width**0.5,
            torch.tensor(0.0),
            torch.tensor([1.0, 1.0, 0.0]),
        )
        for step in steps
    }
    return Probe(heads, TAPPED, 2, denoiser.steps, None)


def probe_overhead(denoiser: Denoiser, probe: Probe, slots: list[Slot], step: int, repeats: int) -> float:
    """Median over interleaved repeats of (a step with the tap capturing and the head scoring) / (a plain step)
    - 1, the batch at `step` - 1 each time: a check's cost as a share of a UNet evaluation."""
    device = denoiser.device
    tap = FeatureTap(denoiser.c, probe.blocks, probe.grid)
    for slot in slots:
        slot.extra["first"] = torch.zeros(probe.head(step).weight.shape[0])

    def timed(run: Callable[[list[Slot]], None]) -> float:
        trial = [replace(s, extra=dict(s.extra)) for s in slots]  # advance replaces tensors: `slots` stay as they are
        synchronise(device)
        started = time.perf_counter()
        run(trial)
        synchronise(device)
        return time.perf_counter() - started

    def with_probe(trial: list[Slot]) -> None:
        capture_advance(denoiser, tap, trial, {step})
        probe.head(step)(torch.stack([s.extra["features"] for s in trial]))  # type: ignore[misc]

    ratios = []
    for _ in range(repeats):
        plain = timed(denoiser.advance)
        ratios.append(timed(with_probe) / plain - 1)
    tap.close()
    return statistics.median(ratios)


@torch.no_grad()
def schedulers(parts: GeneratorComponents, args: argparse.Namespace, device: torch.device) -> None:
    """The schedulers on the same products and seeds, and the probe's overhead."""
    parts.controlnet.eval()
    denoiser = Denoiser(parts, args.steps, 7.5, device=device)
    judge = RFNetJudge(RFNet(RFNetConfig(image_size=args.judge_size, vocabulary=["cm"])), device=device)
    items = [Product(f"p{k}", rgba, "a product, 20 cm") for k, rgba in enumerate(products(args.products, args.size))]
    pool = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
    base = RecurrentConfig(batch_size=args.slots, max_attempts=3, steps=args.steps)
    slots = [denoiser.start(job_for(p, i, 1, pool, base)) for i, p in enumerate(items[: args.slots])]
    finished = [replace(s) for s in slots]
    while not denoiser.done(finished[0]):
        denoiser.advance(finished)
    p = judge(
        denoiser.images(torch.cat([s.latents for s in finished]), finished),
        [s.job.product for s in finished],
        [s.job.caption for s in finished],
    ).p_available
    rc = base.model_copy(update={"threshold": float(p.median())})  # a random judge: accept about half
    steering = SteeringConfig(particles=4, resample_at=[0.1], survivors=[1])
    check = steering.steps(args.steps)[0]
    probe = random_probe(parts, denoiser, slots[0], [check])
    early = rc.model_copy(
        update={"early_reject": True, "early_by": "probe", "early_step": check, "early_threshold": 0.5}
    )
    runs = {
        "refill": lambda: recurrent_generate(denoiser, judge, items, pool, rc, progress=False),
        "whole_batch": lambda: whole_batch_generate(denoiser, judge, items, pool, rc, progress=False),
        "refill + early (probe)": lambda: recurrent_generate(denoiser, judge, items, pool, early, False, False, probe),
        "steering (probe)": lambda: steer_generate(denoiser, judge, items, pool, rc, steering, probe, False, False),
    }
    print(
        f"schedulers: {len(items)} products, {args.steps} DDIM steps, {args.size} px, {args.slots} slots, up to "
        f"{rc.max_attempts} attempts, the judge's median score as tau; the probe checks at step {check}"
    )
    for name, run in runs.items():
        synchronise(device)
        stats = run()
        synchronise(device)
        figures = summarise(stats, len(items), rc.max_attempts)
        print(
            f"  {name}: {figures['accepted']} accepts, {stats.unet_evals} UNet evaluations in {stats.unet_calls} "
            f"calls, {stats.seconds:.1f} s: {figures['accepted'] / stats.seconds:.3f} accepts/s, "
            f"{figures['unet_evals_per_accept']:.1f} evaluations per accept"
        )
    warm = [replace(s) for s in slots]
    for _ in range(check - 1):
        denoiser.advance(warm)
    share = probe_overhead(denoiser, probe, warm, check, args.repeats)
    print(
        f"probe overhead per check: {share:+.2%} of a UNet evaluation (median of {args.repeats} repeats, "
        f"batch {len(warm)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40, help="DDIM steps of the generation-speed figure")
    parser.add_argument("--trajectory", type=int, default=40, help="DDIM steps of the RFFT trajectory")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--products", type=int, default=32, help="products of the schedulers' runs")
    parser.add_argument("--slots", type=int, default=16, help="batch slots of the schedulers")
    parser.add_argument("--judge-size", type=int, default=384, help="the judge's input size")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of the probe's overhead")
    parser.add_argument("--tiny", action="store_true", help="the tiny generator's architecture (random) at 64 px")
    parser.add_argument("--skip-rfft", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="skip the slot denoiser vs the stock pipeline")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine())
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}")
    if args.tiny:
        args.size, args.judge_size = 64, 64
    parts = tiny_components(device) if args.tiny else sd15_components(device)
    sizes = {
        n: sum(p.numel() for p in getattr(parts, n).parameters()) / 1e6
        for n in ("unet", "controlnet", "vae", "text_encoder")
    }
    print("parameters (M): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    if not args.skip_speed:
        generation_speed(parts, args, device)
    schedulers(parts, args, device)
    if not args.skip_rfft:
        rfft_step(parts, args, device)


if __name__ == "__main__":
    main()
