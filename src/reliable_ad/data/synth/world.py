"""RF1M-synth as a deterministic function of (config, index): which product, which label, which split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.render import NoRoomForReference, ProductSpec, Rendering, make_product, render


@dataclass
class SynthSample:
    sample_id: str
    product: ProductSpec
    label: str
    split: str
    rendering: Rendering


def product_for(cfg: SynthConfig, product_index: int) -> tuple[ProductSpec, str]:
    """The product with this index and its split (test = held-out category)."""
    rng = np.random.default_rng([cfg.seed, 0, product_index])
    categories = sorted(set(cfg.categories) | set(cfg.test_categories))
    product = make_product(rng, f"p{cfg.seed}-{product_index:07d}", categories)
    held_out = product.category in cfg.test_categories
    split = "test" if held_out else ("val" if rng.random() < cfg.val_fraction else "train")
    return product, split


def draw_sample(cfg: SynthConfig, index: int) -> SynthSample:
    """Sample `index` of the dataset described by `cfg`."""
    product, split = product_for(cfg, index // cfg.samples_per_product)
    rng = np.random.default_rng([cfg.seed, 1, index])
    labels = list(cfg.class_mix)
    shares = np.array([cfg.class_mix[k] for k in labels], float)
    label = labels[int(rng.choice(len(labels), p=shares / shares.sum()))]
    scale = cfg.image_scale
    for attempt in range(50):
        try:
            rendering = render(product, label, cfg.size, rng, cfg.difficulty, scale, cfg.reference_prob)
            break
        except NoRoomForReference:
            if attempt >= 10:  # small frames and large products: make the product smaller until a reference fits
                scale = (scale[0] * 0.95, scale[1] * 0.95)
    else:
        raise RuntimeError(f"sample {index}: no layout with a reference object in 50 tries at {cfg.size} px")
    return SynthSample(f"s{cfg.seed}-{index:07d}", product, label, split, rendering)
