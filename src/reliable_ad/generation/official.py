"""`rad generate`: the official sampler's behaviour and flag names, on our components.

Per iteration: the next prompt-pool entry (``flag 1`` fills a colour into ``{}``), a batch of products
from ``data_path`` (RGBA, or RGB on white turned into alpha), centre-zoomed to the entry's ``image_scale``
(or kept in place with ``keep_loc``), canny 100/200 of the product alone, inpainting mask 255 - alpha
dilated, StableDiffusionControlNetInpaintPipeline with the chosen sampler and optional LoRA, and the
original product blended back. Unlike the original, products and colours are drawn from a seeded
generator, and every output is logged with its product, prompt, seed and settings in ``log.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverSinglestepScheduler, EulerAncestralDiscreteScheduler
from PIL import Image

from reliable_ad.data.imageio import decode
from reliable_ad.generation.config import GenerateArgs
from reliable_ad.generation.preprocess import centre_zoom, control_inputs, ensure_alpha, paste_product
from reliable_ad.generation.prompts import load_prompt_pool
from reliable_ad.models.generator import GeneratorComponents, load_components

SAMPLERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "DDIM": (DDIMScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ SDE Karras": (DPMSolverSinglestepScheduler, {"use_karras_sigmas": True}),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def scheduler_for(name: str, components: GeneratorComponents) -> Any:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    cls, extra = SAMPLERS[name]
    return cls.from_config(components.scheduler.config, **extra)


def load_product(path: Path, args: GenerateArgs, image_scale: float, matting: bool) -> np.ndarray:
    """A product file as an RGBA canvas of width x height, placed as the sampler places it."""
    rgba = ensure_alpha(
        np.asarray(decode(path.read_bytes(), str(path)).convert("RGBA" if _has_alpha(path) else "RGB")),
        source=str(path),
    )
    if args.keep_loc:
        return np.asarray(Image.fromarray(rgba).resize((args.width, args.height), Image.Resampling.LANCZOS))
    touches = _touches_border(rgba)
    if matting and touches:  # the sampler stretches a product cut by its frame instead of zooming it
        return np.asarray(Image.fromarray(rgba).resize((args.width, args.height), Image.Resampling.LANCZOS))
    return centre_zoom(rgba, (args.width, args.height), image_scale)


def _has_alpha(path: Path) -> bool:
    with Image.open(path) as image:
        return image.mode in ("RGBA", "LA") or "transparency" in image.info


def _touches_border(rgba: np.ndarray) -> bool:
    mask = rgba[..., 3] >= 128
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def run_generate(args: GenerateArgs) -> list[dict[str, Any]]:
    """Generate `iterations` batches into `save_path`; returns the log records (also in log.jsonl)."""
    pool = load_prompt_pool(args.config)
    products = (
        sorted(p for p in args.data_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if (args.data_path.is_dir())
        else []
    )
    if not products:
        raise FileNotFoundError(f"{args.data_path}: no product images (.png/.jpg) to generate for")
    components = load_components(args.base_model_path, args.controlnet_model_path, local_only=not args.allow_download)
    pipe = components.pipeline()
    pipe.scheduler = scheduler_for(args.sampler_name, components)
    cross_attention = None
    if args.lora_model_path:
        pipe.load_lora_weights(args.lora_model_path)
        cross_attention = {"scale": args.lora_scale}
    pipe.set_progress_bar_config(disable=True)
    args.save_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    records: list[dict[str, Any]] = []
    for iteration in range(args.iterations):
        entry = pool[iteration % len(pool)]
        prompt = entry.render(rng)
        negative = entry.negative_prompt or args.negative_prompt
        chosen = [
            products[int(k)] for k in rng.choice(len(products), min(args.batch_size, len(products)), replace=False)
        ]
        canvases = [load_product(p, args, entry.image_scale, entry.matting) for p in chosen]
        inputs = [control_inputs(c, args.low_threshold, args.high_threshold) for c in canvases]
        seeds = [
            int(args.seed) + iteration * args.batch_size + k if args.seed is not None else int(rng.integers(2**31))
            for k in range(len(chosen))
        ]
        started = time.perf_counter()
        result = pipe(
            prompt=[prompt] * len(chosen),
            negative_prompt=[negative] * len(chosen),
            image=[Image.fromarray(i.init_image) for i in inputs],
            mask_image=[Image.fromarray(i.inpaint_mask) for i in inputs],
            control_image=[Image.fromarray(i.control_image) for i in inputs],
            height=args.height,
            width=args.width,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
            eta=args.eta,
            controlnet_conditioning_scale=args.controlnet_conditioning_scale,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            cross_attention_kwargs=cross_attention,
            output_type="np",
        )
        seconds = time.perf_counter() - started
        for k, (path, canvas) in enumerate(zip(chosen, canvases, strict=True)):
            image = np.clip(np.rint(result.images[k] * 255), 0, 255).astype(np.uint8)
            out = args.save_path / f"{path.stem}_{iteration:04d}_{k:02d}.png"
            Image.fromarray(paste_product(image, canvas)).save(out)
            records.append(
                {
                    "product": str(path),
                    "output": str(out),
                    "prompt": prompt,
                    "negative_prompt": negative,
                    "seed": seeds[k],
                    "sampler": args.sampler_name,
                    "steps": args.num_inference_steps,
                    "guidance_scale": args.guidance_scale,
                    "config_entry": iteration % len(pool),
                    "image_scale": entry.image_scale,
                    "batch_seconds": round(seconds, 3),
                }
            )
    with (args.save_path / "log.jsonl").open("a") as log:
        for record in records:
            log.write(json.dumps(record) + "\n")
    return records
