"""Pre-train the tiny generator of the embedded world on RF1M-synth renders (rendered on the fly).

Stage 1 trains the VAE to reconstruct scenes; stage 2 trains the inpainting UNet, the ControlNet and the
text encoder together with the usual noise-prediction loss, the VAE frozen. Defective scenes are part of the
mix on purpose: the base generator should make the paper's kinds of mistakes. Progress, periodic reviewer
checks of generated samples, checkpoints (resumable) and an EMA of the weights are built in.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from numpy.typing import NDArray
from tqdm import tqdm

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.reviewer import product_mask, review
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.errors import InputError
from reliable_ad.generation.config import PretrainConfig
from reliable_ad.generation.preprocess import control_inputs
from reliable_ad.generation.sampler import generate
from reliable_ad.models.generator import (
    GeneratorComponents,
    build_tiny_components,
    model_card,
    save_components,
)
from reliable_ad.training.checkpoint import fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint


def _scene_batch(cfg: SynthConfig, start: int, count: int) -> list[Any]:
    return [draw_sample(cfg, start + i) for i in range(count)]


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 H x W x C images -> float tensor in [-1, 1], N x C x H x W."""
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _train_vae(components: GeneratorComponents, cfg: PretrainConfig, start_step: int, save: Any, log: Any) -> None:
    vae = components.vae
    vae.train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    bar = tqdm(range(start_step, cfg.vae_steps), desc="vae", initial=start_step, total=cfg.vae_steps)
    for step in bar:
        batch = _to_tensor([s.rendering.image for s in _scene_batch(cfg.synth, step * cfg.vae_batch, cfg.vae_batch)])
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch) + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == cfg.vae_steps:
            log({"stage": "vae", "step": step + 1, "loss": loss.item()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            save("vae", step + 1, {"vae": vae}, None)
    vae.eval()


@torch.no_grad()
def _latent_scale(components: GeneratorComponents, cfg: PretrainConfig) -> float:
    """SD-style scaling factor: 1 / std of the VAE's latents over a few batches."""
    latents = []
    for k in range(4):
        batch = _to_tensor([s.rendering.image for s in _scene_batch(cfg.synth, 10**8 + k * 64, 64)])
        latents.append(components.vae.encode(batch).latent_dist.mode())
    return float(1.0 / torch.cat(latents).std())


def _encode_prompts(components: GeneratorComponents, prompts: list[str]) -> torch.Tensor:
    ids = components.tokenizer(
        prompts,
        padding="max_length",
        max_length=components.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return components.text_encoder(ids.to(components.text_encoder.device))[0]


@dataclass(frozen=True)
class Example:
    """A finished picture, the product photo (RGBA) it was made around and its prompt: what the denoising loss
    teaches the generator to make."""

    image: NDArray[np.uint8]
    product: NDArray[np.uint8]
    prompt: str


def examples_of(samples: list[Any]) -> list[Example]:
    """RF1M-synth samples as training examples (their renderings)."""
    return [Example(s.rendering.image, s.rendering.product, s.rendering.prompt) for s in samples]


@dataclass(frozen=True)
class Conditioned:
    """Finished pictures encoded, with their conditioning, as the inpainting pipeline prepares its inputs."""

    latents: torch.Tensor
    masked_latents: torch.Tensor
    mask: torch.Tensor
    control: torch.Tensor
    text: torch.Tensor


def condition(components: GeneratorComponents, examples: list[Example], prompts: list[str]) -> Conditioned:
    """The latents of `examples` and what conditions their denoising: the masked image, the mask, the control
    image and the prompts' embeddings (`prompts`: the examples' own, or some left empty for dropout)."""
    scale = components.vae.config.scaling_factor
    keeps, masks, controls = [], [], []
    for example in examples:
        inputs = control_inputs(example.product)
        keep = inputs.inpaint_mask < 128
        keeps.append(keep)
        masks.append((~keep).astype(np.float32))
        controls.append(inputs.control_image)
    device = components.unet.device  # RFFT's anchor runs this on the accelerator's device
    pixels = _to_tensor([example.image for example in examples]).to(device)
    # as the inpainting pipeline does: the image in [-1, 1], zero (not black) where the background is repainted
    masked = pixels * torch.from_numpy(np.stack(keeps))[:, None].float().to(device)
    with torch.no_grad():
        latents = components.vae.encode(pixels).latent_dist.sample() * scale
        masked_latents = components.vae.encode(masked).latent_dist.sample() * scale
    latent_size = latents.shape[-1]
    mask = F.interpolate(torch.from_numpy(np.stack(masks))[:, None], size=(latent_size, latent_size)).to(device)
    control = torch.from_numpy(np.stack(controls).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(device)
    text = _encode_prompts(components, prompts)  # with its gradient: pretraining trains the text encoder
    return Conditioned(latents, masked_latents, mask, control, text)


def predict_noise(
    components: GeneratorComponents,
    controlnet: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    inputs: Conditioned,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """The UNet's noise prediction of the noised latents, guided by `controlnet` (the tuned one or a reference)."""
    noisy = noise_scheduler.add_noise(inputs.latents, noise, timesteps)
    down, mid = controlnet(
        noisy, timesteps, encoder_hidden_states=inputs.text, controlnet_cond=inputs.control, return_dict=False
    )
    return components.unet(
        torch.cat([noisy, inputs.mask, inputs.masked_latents], dim=1),
        timesteps,
        encoder_hidden_states=inputs.text,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
    ).sample


def denoising_loss(
    components: GeneratorComponents,
    noise_scheduler: DDPMScheduler,
    examples: list[Example],
    prompt_dropout: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """The noise-prediction loss of the inpainting UNet + ControlNet on finished pictures (prepared exactly as
    the inpainting pipeline prepares its inputs)."""
    prompts = ["" if rng.random() < prompt_dropout else example.prompt for example in examples]
    inputs = condition(components, examples, prompts)
    noise = torch.randn_like(inputs.latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(examples),))
    timesteps = timesteps.to(inputs.latents.device)
    prediction = predict_noise(components, components.controlnet, noise_scheduler, inputs, noise, timesteps)
    return F.mse_loss(prediction, noise)


def reviewer_check(
    components: GeneratorComponents, cfg: PretrainConfig, count: int, steps: int
) -> tuple[float, list[np.ndarray]]:
    """Generate `count` images for fixed held-out scenes and return the reviewer's available rate."""
    samples = _scene_batch(cfg.synth, 10**9, count)
    images: list[np.ndarray] = []
    for k in range(0, count, 16):
        chunk = samples[k : k + 16]
        images += generate(
            components,
            [s.rendering.product for s in chunk],
            [s.rendering.prompt for s in chunk],
            seeds=list(range(k, k + len(chunk))),
            steps=steps,
        )
    verdicts = [
        review(img, product_mask(s.rendering.product), s.product.height_cm).available
        for img, s in zip(images, samples, strict=True)
    ]
    return float(np.mean(verdicts)), images


def save_grid(images: list[np.ndarray], path: Path, columns: int = 8) -> None:
    from PIL import Image

    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images) - columns + 1, columns)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def pretrain_tiny_generator(cfg: PretrainConfig, out: Path, resume: bool = True) -> dict[str, Any]:
    """Run both stages into `out` (checkpoints in `out/checkpoints`), save the pipeline and its model card."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    fp = fingerprint(cfg.model_dump(mode="json", exclude={"threads"}))  # threads do not change the result
    components = build_tiny_components(cfg.model, seed=cfg.seed)
    trainable = {"unet": components.unet, "controlnet": components.controlnet, "text_encoder": components.text_encoder}
    ema = {name: copy.deepcopy(m).requires_grad_(False) for name, m in trainable.items()}
    params = [p for m in trainable.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    log_path = out / "train_log.jsonl"
    started = time.time()

    def log(record: dict[str, Any]) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps({**record, "elapsed_s": round(time.time() - started, 1)}) + "\n")

    def save(stage: str, step: int, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer | None) -> None:
        all_modules = {"vae": components.vae, **modules}
        save_checkpoint(
            ckpt_dir,
            all_modules,
            opt,
            step,
            fp,
            {"stage": stage, "scaling_factor": components.vae.config.scaling_factor},
        )

    stage, step = "vae", 0
    latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        extra = json.loads((latest / "state.json").read_text())["extra"]
        stage = extra["stage"]
        modules: dict[str, torch.nn.Module] = {"vae": components.vae}
        if stage == "unet":
            modules.update(trainable)
            modules.update({f"ema_{k}": v for k, v in ema.items()})
        state = load_checkpoint(latest, modules, optimizer if stage == "unet" else None, fp)
        step = state["step"]
        components.vae.register_to_config(scaling_factor=extra["scaling_factor"])
        tqdm.write(f"resumed {stage} stage at step {step} from {latest}")

    if stage == "vae":
        _train_vae(components, cfg, step, save, log)
        components.vae.register_to_config(scaling_factor=_latent_scale(components, cfg))
        stage, step = "unet", 0
    components.vae.requires_grad_(False).eval()

    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    rng = np.random.default_rng([cfg.seed, step])
    bar = tqdm(range(step, cfg.steps), desc="unet+controlnet", initial=step, total=cfg.steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        samples = _scene_batch(cfg.synth, 10**7 + step * cfg.batch, cfg.batch)
        loss = denoising_loss(components, noise_scheduler, examples_of(samples), cfg.prompt_dropout, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for name, module in trainable.items():
                for e, p in zip(ema[name].parameters(), module.parameters(), strict=True):
                    e.lerp_(p, 1.0 - cfg.ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            log({"stage": "unet", "step": step + 1, "loss": loss.item()})
        if (step + 1) % cfg.checkpoint_every == 0:
            save("unet", step + 1, {**trainable, **{f"ema_{k}": v for k, v in ema.items()}}, optimizer)
        if (step + 1) % cfg.eval_every == 0:
            rate, images = reviewer_check(_with(components, ema), cfg, cfg.eval_samples, cfg.eval_steps)
            save_grid(images[:32], out / f"grid-{step + 1:06d}.png")
            log({"stage": "eval", "step": step + 1, "reviewer_available_rate": rate})
            tqdm.write(f"step {step + 1}: reviewer available rate {rate:.3f}")

    save("unet", cfg.steps, {**trainable, **{f"ema_{k}": v for k, v in ema.items()}}, optimizer)
    return export_generator(cfg, latest_checkpoint(ckpt_dir) or ckpt_dir, out)


def export_generator(cfg: PretrainConfig, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Turn a pre-training checkpoint (its EMA weights) into the shipped pipeline folder, sample grid and model
    card: `out/model`, `out/sample_grid.png`, `out/model_card.json`."""
    torch.set_num_threads(cfg.threads)
    components = build_tiny_components(cfg.model, seed=cfg.seed)
    trainable = {"unet": components.unet, "controlnet": components.controlnet, "text_encoder": components.text_encoder}
    modules: dict[str, torch.nn.Module] = {"vae": components.vae, **{f"ema_{k}": v for k, v in trainable.items()}}
    state = load_checkpoint(checkpoint, modules, None, fingerprint(cfg.model_dump(mode="json", exclude={"threads"})))
    if state["extra"].get("stage") != "unet":
        raise InputError(f"{checkpoint} is a checkpoint of the VAE stage: nothing of the UNet to export yet")
    components.vae.register_to_config(scaling_factor=state["extra"]["scaling_factor"])
    rate, images = reviewer_check(components, cfg, max(cfg.eval_samples, 64), cfg.eval_steps)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(images[:32], out / "sample_grid.png")
    for module in (components.vae, components.unet, components.controlnet, components.text_encoder):
        module.to(torch.float16)
    save_components(components, out / "model")
    card = {
        "what": "tiny SD-style inpainting generator + canny ControlNet for RF1M-synth",
        # the learning rate only warms up, so a run of `steps` steps trains what this checkpoint holds
        "command": f"rad generator pretrain-tiny --out <folder> --params params.yaml --steps {state['step']}",
        "synth_seed": cfg.synth.seed,
        "vae_steps": cfg.vae_steps,
        "steps": state["step"],
        "batch": cfg.batch,
        "train_seconds": round(_training_seconds(checkpoint.parent.parent / "train_log.jsonl"), 1),
        "machine": f"{platform.machine()}, {cfg.threads} torch thread(s), {platform.processor() or 'cpu'}",
        "reviewer_available_rate": rate,
        "eval_samples": max(cfg.eval_samples, 64),
        "eval_steps": cfg.eval_steps,
        "config": cfg.model_dump(mode="json"),
        "sample_grid": "sample_grid.png",
    }
    model_card(out / "model_card.json", card)
    return card


def _training_seconds(log: Path) -> float:
    """Wall time over every (resumed) process of a run: the log's clock restarts with each process."""
    if not log.exists():
        return float("nan")
    total, last = 0.0, 0.0
    for line in log.read_text().splitlines():
        elapsed = float(json.loads(line)["elapsed_s"])
        if elapsed < last:  # a new process
            total += last
        last = elapsed
    return total + last


def _with(components: GeneratorComponents, ema: dict[str, torch.nn.Module]) -> GeneratorComponents:
    return GeneratorComponents(
        components.vae, ema["unet"], ema["controlnet"], ema["text_encoder"], components.tokenizer, components.scheduler
    )
