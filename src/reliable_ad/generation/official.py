"""`rad generate`: the official sampler's behaviour and flag names, on our components.

Per iteration: the next prompt-pool entry (``flag 1`` fills a colour into ``{}``), a batch of products
from ``data_path`` (RGBA, or RGB on white turned into alpha), centre-zoomed to the entry's ``image_scale``
(or the sampler's ``image_scale`` when the entry has none; kept in place with ``keep_loc``), canny 100/200
of the product alone, inpainting mask 255 - alpha dilated, StableDiffusionControlNetInpaintPipeline with
the chosen sampler, optional LoRA and ``clip_skip``, and the original product blended back; ``save_concat``
also writes the product on white beside each output into ``<save_path>_concat``. Unlike the original,
products and colours are drawn from a seeded generator, and every output is logged with its product, prompt,
seed and settings in ``log.jsonl`` as it is written. Output names carry the run's number
(``<product>_r<run>_<iteration>_<index>.png``): runs into one folder add to it, never overwrite.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverSinglestepScheduler, EulerAncestralDiscreteScheduler
from diffusers.utils import scale_lora_layers, unscale_lora_layers
from PIL import Image

from reliable_ad.data.cutout import ProductImageError, centre_zoom, read_product
from reliable_ad.data.imageio import ImageDecodeError
from reliable_ad.errors import InputError
from reliable_ad.generation.config import GenerateArgs
from reliable_ad.generation.preprocess import control_inputs, paste_product
from reliable_ad.generation.prompts import load_prompt_pool
from reliable_ad.models.generator import GeneratorComponents, load_components

SAMPLERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "DDIM": (DDIMScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ SDE Karras": (DPMSolverSinglestepScheduler, {"use_karras_sigmas": True}),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOG_FILE = "log.jsonl"
OUTPUT_NAME = re.compile(r"_r(\d+)_\d{4}_\d{2}\.png$")  # <product>_r<run>_<iteration>_<index>.png


def check_sampler(name: str) -> None:
    """Fail on a sampler name before any model loads (loading takes long on a real SD1.5)."""
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")


def scheduler_for(name: str, components: GeneratorComponents) -> Any:
    check_sampler(name)
    cls, extra = SAMPLERS[name]
    return cls.from_config(components.scheduler.config, **extra)


@torch.no_grad()
def clip_skip_embeds(
    components: GeneratorComponents, texts: list[str], clip_skip: int, lora_scale: float | None
) -> torch.Tensor:
    """Prompt embeddings from the text encoder's layer `clip_skip` before the last, through its final norm, as
    diffusers computes them: its own `clip_skip` path fails on transformers >= 5.6, whose CLIPTextModel has
    no `text_model` any more (huggingface/diffusers#14124)."""
    tokenizer, encoder = components.tokenizer, components.text_encoder
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(encoder.device)
    if lora_scale is not None:
        scale_lora_layers(encoder, lora_scale)
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
    if lora_scale is not None:
        unscale_lora_layers(encoder, lora_scale)
    return torch.as_tensor(encoder.final_layer_norm(hidden))


def native_size(pipe: Any) -> int:
    """The side a diffusers pipeline generates at when given none: its UNet's sample size in pixels (512 for
    SD1.5), as the pipeline itself computes it."""
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def check_products(folder: Path, paths: list[Path], white_tolerance: int) -> None:
    """Refuse the run, naming every product that cannot be used, before any model loads: a bad product must
    not fail a run only when the seed happens to draw it."""
    problems = []
    for path in paths:
        try:
            read_product(path, white_tolerance, "--white_tolerance")
        except (ImageDecodeError, ProductImageError, OSError) as error:
            problems.append(str(error))
    if problems:
        header = f"{len(problems)} of {len(paths)} product images in {folder} cannot be used:"
        raise ProductImageError("\n  ".join([header, *problems]))


def load_product(
    path: Path, args: GenerateArgs, size: tuple[int, int], image_scale: float, matting: bool
) -> np.ndarray:
    """A product file as an RGBA canvas of `size` (width, height), placed as the sampler places it."""
    rgba = read_product(path, args.white_tolerance, "--white_tolerance")
    if args.keep_loc:
        return np.asarray(Image.fromarray(rgba).resize(size, Image.Resampling.LANCZOS))
    touches = _touches_border(rgba)
    if matting and touches:  # the sampler stretches a product cut by its frame instead of zooming it
        return np.asarray(Image.fromarray(rgba).resize(size, Image.Resampling.LANCZOS))
    return centre_zoom(rgba, size, image_scale)


def _touches_border(rgba: np.ndarray) -> bool:
    mask = rgba[..., 3] >= 128
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def next_run(save_path: Path) -> int:
    """The number of a new run into `save_path`, above every run in its log and in its images' names, so no
    name of an earlier run (logged or not, e.g. by a run that crashed) comes again."""
    log = save_path / LOG_FILE
    logged = (
        [json.loads(line).get("run", 0) for line in log.read_text().splitlines() if line.strip()]
        if log.exists()
        else []
    )
    named = [int(m.group(1)) for p in save_path.glob("*.png") if (m := OUTPUT_NAME.search(p.name))]
    return max([0, *logged, *named]) + 1


def save_new(image: np.ndarray, path: Path) -> None:
    """Write a PNG where there is no file yet: nothing already there is overwritten."""
    try:
        with path.open("xb") as handle:
            Image.fromarray(image).save(handle, format="PNG")
    except FileExistsError as error:
        raise FileExistsError(f"{path} exists already: not overwritten") from error


def run_generate(args: GenerateArgs, clip_skip: int | None = None, save_concat: bool = False) -> list[dict[str, Any]]:
    """Generate `iterations` batches into `save_path`; returns the log records (also in log.jsonl).

    `clip_skip`: prompts are encoded by the text encoder's layer that many before the last, as in the official
    sampler. `save_concat`: also write the placed product on white beside each output, as it does.
    """
    check_sampler(args.sampler_name)
    pool = load_prompt_pool(args.config)
    products = (
        sorted(p for p in args.data_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if (args.data_path.is_dir())
        else []
    )
    if not products:
        raise FileNotFoundError(f"{args.data_path}: no product images (.png/.jpg) to generate for")
    check_products(args.data_path, products, args.white_tolerance)
    components = load_components(args.base_model_path, args.controlnet_model_path, local_only=not args.allow_download)
    layers = components.text_encoder.config.num_hidden_layers
    if clip_skip is not None and not 0 <= clip_skip < layers:
        raise InputError(f"clip_skip {clip_skip} must lie in [0, {layers - 1}] for a {layers}-layer text encoder")
    pipe = components.pipeline()
    width, height = args.width or native_size(pipe), args.height or native_size(pipe)
    pipe.scheduler = scheduler_for(args.sampler_name, components)
    cross_attention = None
    if args.lora_model_path:
        pipe.load_lora_weights(args.lora_model_path)
        cross_attention = {"scale": args.lora_scale}
    pipe.set_progress_bar_config(disable=True)
    args.save_path.mkdir(parents=True, exist_ok=True)
    concat_dir = args.save_path.with_name(args.save_path.name + "_concat") if save_concat else None
    if concat_dir is not None:
        concat_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.save_path / LOG_FILE
    run = next_run(args.save_path)
    rng = np.random.default_rng(args.seed)
    records: list[dict[str, Any]] = []
    for iteration in range(args.iterations):
        entry = pool[iteration % len(pool)]
        prompt = entry.render(rng)
        negative = entry.negative_prompt or args.negative_prompt
        chosen = [
            products[int(k)] for k in rng.choice(len(products), min(args.batch_size, len(products)), replace=False)
        ]
        image_scale = args.image_scale if entry.image_scale is None else entry.image_scale
        canvases = [load_product(p, args, (width, height), image_scale, entry.matting) for p in chosen]
        inputs = [control_inputs(c, args.low_threshold, args.high_threshold) for c in canvases]
        seeds = [
            int(args.seed) + iteration * args.batch_size + k if args.seed is not None else int(rng.integers(2**31))
            for k in range(len(chosen))
        ]
        started = time.perf_counter()
        prompts = {"prompt": [prompt] * len(chosen), "negative_prompt": [negative] * len(chosen)}
        lora_scale = args.lora_scale if args.lora_model_path else None
        texts: dict[str, Any] = (
            prompts
            if clip_skip is None
            else {f"{k}_embeds": clip_skip_embeds(components, v, clip_skip, lora_scale) for k, v in prompts.items()}
        )
        result = pipe(
            **texts,
            image=[Image.fromarray(i.init_image) for i in inputs],
            mask_image=[Image.fromarray(i.inpaint_mask) for i in inputs],
            control_image=[Image.fromarray(i.control_image) for i in inputs],
            height=height,
            width=width,
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
            out = args.save_path / f"{path.stem}_r{run}_{iteration:04d}_{k:02d}.png"
            output = paste_product(image, canvas)
            save_new(output, out)
            concat = concat_dir / out.name if concat_dir is not None else None
            if concat is not None:
                on_white = paste_product(np.full_like(output, 255), canvas)
                save_new(np.concatenate([on_white, output], axis=1), concat)
            record = {
                "run": run,
                "product": str(path),
                "output": str(out),
                "concat": str(concat) if concat is not None else None,
                "prompt": prompt,
                "negative_prompt": negative,
                "seed": seeds[k],
                "sampler": args.sampler_name,
                "steps": args.num_inference_steps,
                "width": width,
                "height": height,
                "guidance_scale": args.guidance_scale,
                "config_entry": iteration % len(pool),
                "image_scale": image_scale,
                "clip_skip": clip_skip,
                "batch_seconds": round(seconds, 3),
            }
            with log_path.open("a") as log:  # as each image is written: a crash leaves no image unlogged
                log.write(json.dumps(record) + "\n")
            records.append(record)
    return records
