"""RF1M-synth as a product source: one photo per product, as generation takes it (RGBA on the canvas, caption,
height), each reviewed by the simulated reviewer. RFFT trains on them, its snapshot choice validates on them
and the evaluations count on them, each under its own seed so the sets never meet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.products import Product, Split
from reliable_ad.data.reviewer import reviewer_for
from reliable_ad.data.synth.world import draw_sample


def _draw(cfg: SynthConfig, count: int, offset: int, numbered: bool) -> list[Product]:
    """Products `offset` .. `offset + count` of `cfg` (one sample each), with the simulated reviewer; `numbered`
    keys carry their index (the held-out draws' ids, kept as they were)."""
    products = []
    for i in range(offset, offset + count):
        sample = draw_sample(cfg, i)
        spec, rgba = sample.product, sample.rendering.product
        key = f"{spec.product_id}-{i}" if numbered else spec.product_id
        products.append(
            Product(
                key, rgba, spec.title, spec.height_cm, spec.category, sample.split, reviewer_for(rgba, spec.height_cm)
            )
        )
    return products


def held_out_products(count: int, seed: int, categories: Sequence[str] | None = None, offset: int = 0) -> list[Product]:
    """Product photos of RF1M-synth that are suitable (the "available" renderings' cut-outs) with captions, one
    per product: every entry is another product, so paired statistics over them count independent items."""
    synth = SynthConfig(
        n=offset + count, seed=seed, class_mix={"available": 1.0}, test_categories=[], samples_per_product=1
    )
    if categories:
        synth = synth.model_copy(update={"categories": list(categories)})
    return _draw(synth, count, offset, numbered=True)


def split_products(count: int, seed: int, world: SynthConfig, offset: int = 0) -> list[Product]:
    """`count` suitable RF1M-synth products under `world`'s split rule (held-out categories are the test split),
    for labelled batches that train and test the judge."""
    cfg = world.model_copy(
        update={"n": max(offset + count, 1), "seed": seed, "class_mix": {"available": 1.0}, "samples_per_product": 1}
    )
    return _draw(cfg, count, offset, numbered=False)


@dataclass(frozen=True)
class SynthProducts:
    """The embedded world's products. With a split, suitable products of every category (or `categories`):
    the seeds keep the roles apart. Without one, `world`'s split rule, as RF1M-synth's own samples have it."""

    world: SynthConfig = field(default_factory=SynthConfig)

    def products(
        self, count: int, seed: int, split: Split | None, categories: Sequence[str] | None = None, offset: int = 0
    ) -> list[Product]:
        if split is None:
            return split_products(count, seed, self.world, offset)
        return held_out_products(count, seed, categories, offset)

    def version(self) -> str:
        return "rf1m-synth"  # drawn by code: the code's version is the products'
