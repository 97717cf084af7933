"""RF1M-synth as a deterministic function of (config, index): which product, which label, which split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reliable_ad.data.synth.catalog import CATEGORIES
from reliable_ad.data.synth.render import NoRoomForReference, ProductSpec, Rendering, make_product, render
from reliable_ad.labels import RF1M_LABELS

DEFAULT_MIX = {
    "available": 0.4,
    "unsuitable": 0.12,
    "space_mismatch": 0.12,
    "size_mismatch": 0.12,
    "indistinctiveness": 0.12,
    "shape_hallucination": 0.12,
}


class SynthConfig(BaseModel):
    """Knobs of RF1M-synth. The same config and index always give the same sample."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(2000, ge=1, description="number of samples")
    size: int = Field(64, ge=32, le=512, description="image side in pixels")
    seed: int = Field(0, description="seed of the whole dataset")
    samples_per_product: int = Field(4, ge=1, description="generated images per product")
    class_mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX), description="label shares")
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES), description="product categories")
    test_categories: list[str] = Field(
        default_factory=lambda: ["speaker", "mug"], description="categories held out as the test split"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the other products used for validation")
    difficulty: float = Field(1.0, ge=0, le=1, description="defect strength: 1 clearest, 0 subtlest")
    image_scale: tuple[float, float] = Field((0.4, 0.55), description="product size range (share of canvas)")
    reference_prob: float = Field(0.9, ge=0, le=1, description="chance of a reference object in a scene")

    @field_validator("class_mix")
    @classmethod
    def _known_labels(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = set(mix) - set(RF1M_LABELS.values())
        if unknown:
            raise ValueError(f"class_mix has unknown labels {sorted(unknown)}")
        if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError("class_mix shares must be >= 0 and not all zero")
        return mix

    @model_validator(mode="after")
    def _known_categories(self) -> SynthConfig:
        for name in (*self.categories, *self.test_categories):
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r}; known: {sorted(CATEGORIES)}")
        if self.size % 8:
            raise ValueError(f"size must be a multiple of 8, got {self.size}")
        return self


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
