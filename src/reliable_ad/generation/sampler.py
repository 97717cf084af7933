"""Generate ad images for product cut-outs with the inpainting ControlNet pipeline, product pasted back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from reliable_ad.generation.preprocess import control_inputs, paste_product
from reliable_ad.models.generator import GeneratorComponents


def generate(
    components: GeneratorComponents,
    products: Sequence[NDArray[np.uint8]],
    prompts: Sequence[str],
    seeds: Sequence[int],
    negative_prompts: Sequence[str] | None = None,
    steps: int = 20,
    guidance_scale: float = 7.5,
    controlnet_scale: float = 1.0,
    progress: bool = False,
) -> list[NDArray[np.uint8]]:
    """One image per (product RGBA on the canvas, prompt, seed); the original product is pasted back."""
    if not (len(products) == len(prompts) == len(seeds)):
        raise ValueError("products, prompts and seeds must have the same length")
    pipe = components.pipeline()
    pipe.set_progress_bar_config(disable=not progress)
    inputs = [control_inputs(p) for p in products]
    size = products[0].shape[0]
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    result = pipe(
        prompt=list(prompts),
        negative_prompt=list(negative_prompts) if negative_prompts is not None else None,
        image=[Image.fromarray(i.init_image) for i in inputs],
        mask_image=[Image.fromarray(i.inpaint_mask) for i in inputs],
        control_image=[Image.fromarray(i.control_image) for i in inputs],
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        controlnet_conditioning_scale=controlnet_scale,
        generator=generators,
        output_type="np",
    )
    images = np.clip(np.rint(np.asarray(result.images) * 255), 0, 255).astype(np.uint8)
    return [paste_product(img, p) for img, p in zip(images, products, strict=True)]
