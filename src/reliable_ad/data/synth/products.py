"""Products of RF1M-synth to generate for: one photo per product, as generation takes it (RGBA on the canvas,
caption, height for the reviewer). RFFT trains on them, its snapshot choice validates on them and the
evaluations count on them, each under its own seed so the sets never meet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.world import draw_sample


@dataclass
class Product:
    key: str
    rgba: NDArray[np.uint8]  # on the canvas, as generation takes it
    caption: str
    height_cm: float | None = None


def held_out_products(count: int, seed: int, categories: list[str] | None = None, offset: int = 0) -> list[Product]:
    """Product photos of RF1M-synth that are suitable (the "available" renderings' cut-outs) with captions, one
    per product: every entry is another product, so paired statistics over them count independent items."""
    synth = SynthConfig(
        n=offset + count, seed=seed, class_mix={"available": 1.0}, test_categories=[], samples_per_product=1
    )
    if categories:
        synth = synth.model_copy(update={"categories": categories})
    products = []
    for i in range(offset, offset + count):
        sample = draw_sample(synth, i)
        products.append(
            Product(
                sample.product.product_id + f"-{i}",
                sample.rendering.product,
                sample.product.title,
                sample.product.height_cm,
            )
        )
    return products
