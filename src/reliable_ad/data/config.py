"""Settings of the data stages (`params.yaml` sections `data.*`): plain pydantic, importable without numpy or torch.

The defaults here are the defaults: params.yaml states only what differs from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reliable_ad.data.layout import SPLITS
from reliable_ad.data.shard_format import BLOB_COLUMNS
from reliable_ad.data.synth.catalog import CATEGORIES
from reliable_ad.labels import RF1M_LABELS, LabelSet

WHITE_TOLERANCE = 32  # how far below 255 a white background may be: a JPEG's ringing and colour bleed reach ~30
DEFAULT_MAX_PIXELS = 4096 * 4096  # decoding bomb guard

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


class CatalogConfig(BaseModel):
    """A team's own products instead of RF1M-synth's: a folder of product photos (RGBA PNGs, or photos on a
    white background) and `products.jsonl`, one object per product: `image` (its path in the folder) and
    `title`, optionally `product_id`, `category`, `height_cm` and `split` (train / validation / test; without
    one a product's split follows a hash of its id: 70 / 15 / 15)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="the catalog folder; null: RF1M-synth's products, drawn by seed")
    size: int = Field(64, ge=32, le=2048, description="canvas side the products are placed on: the generator's")
    image_scale: float = Field(0.5, gt=0, le=1, description="the product's longer side as a share of the canvas")
    white_tolerance: int = Field(
        WHITE_TOLERANCE, ge=0, le=254, description="how far below 255 a photo's white background may be"
    )
    reviewer: Literal["people", "simulated"] = Field(
        "people",
        description="who labels the images of its products: people, later (review queue); simulated: the "
        "embedded reviewer now (needs every product's height_cm)",
    )


class ImportConfig(BaseModel):
    """How to read an RF1M folder: the format of label.txt, what must be there, how to split."""

    model_config = ConfigDict(extra="forbid")

    separator: str = Field(
        "\t", min_length=1, max_length=1, description="the character between image name and label in label.txt"
    )
    header: bool = Field(False, description="label.txt starts with a header line, which is skipped")
    quarantine: bool = Field(False, description="write bad rows to rejects.jsonl instead of stopping at the first")
    require_metadata: bool = Field(True, description="every image needs a metadata.jsonl entry with prompt and title")
    check_files: bool = Field(True, description="check that images and products exist (off: assume the layout)")
    test_categories: list[str] = Field(default_factory=list, description="product categories held out as test")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the other products used for validation")
    split_seed: int = Field(0, description="seed of the product hash that assigns val")
    max_name_length: int = Field(255, ge=1, description="longest image name accepted (characters)")

    @field_validator("separator")
    @classmethod
    def _one_line(cls, separator: str) -> str:
        if "\n" in separator or "\r" in separator:
            raise ValueError("the separator cannot contain a line break")
        return separator


class ValidationConfig(BaseModel):
    """What a valid dataset looks like."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=lambda: list(RF1M_LABELS.values()), description="allowed labels")
    min_size: int = Field(32, ge=1, description="smallest image side in pixels")
    max_size: int = Field(4096, ge=1, description="largest image side in pixels")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="pixel limit checked before decoding (bomb guard)")
    image_modes: list[str] = Field(default_factory=lambda: ["RGB", "RGBA", "L"], description="generated image modes")
    product_modes: list[str] = Field(default_factory=lambda: ["RGBA", "RGB"], description="product image modes")
    white_tolerance: int = Field(
        WHITE_TOLERANCE, ge=0, le=254, description="how far below 255 an RGB product's white background may be"
    )
    class_share: tuple[float, float] = Field((0.0, 1.0), description="default [min, max] share of every class")
    class_share_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per-class [min, max] share, overriding class_share"
    )
    max_quarantined_share: float = Field(0.0, ge=0, le=1, description="share of rows with bad files tolerated")
    check_files: bool = Field(True, description="check that every referenced file exists")
    check_images: bool = Field(True, description="decode and check every file (the file pass; needs check_files)")
    workers: int = Field(1, ge=1, description="worker processes of the file pass")
    data_docs: bool = Field(True, description="build GX Data Docs HTML")

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, labels: list[str]) -> list[str]:
        LabelSet(tuple(labels))
        return labels

    @field_validator("class_share", "class_share_bounds")
    @classmethod
    def _shares(cls, value: Any) -> Any:
        for low, high in value.values() if isinstance(value, dict) else [value]:
            if not 0 <= low <= high <= 1:
                raise ValueError(f"a share range must satisfy 0 <= min <= max <= 1, got [{low}, {high}]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ValidationConfig:
        unknown = set(self.class_share_bounds) - set(self.labels)
        if unknown:
            raise ValueError(f"class_share_bounds names labels outside the label set: {sorted(unknown)}")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        return self

    def share_bounds(self, label: str) -> tuple[float, float]:
        return self.class_share_bounds.get(label, self.class_share)


class PrepareConfig(BaseModel):
    """Knobs of `rad data prepare`."""

    model_config = ConfigDict(extra="forbid")

    samples_per_shard: int = Field(5000, ge=1, description="rows per shard file; the last shard of a split is smaller")
    row_group_rows: int = Field(
        256, ge=1, description="rows per Parquet row group: the unit a reader loads and a worker is given"
    )
    image_size: int = Field(64, ge=8, le=4096, description="side of the square images every modality must have")
    on_size_mismatch: Literal["refuse", "resize"] = Field(
        "refuse",
        description="an image of another size: 'refuse' fails naming the file; 'resize' scales it to image_size "
        "(aspect ratio not kept) with `interpolation`",
    )
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "area"] = Field(
        "lanczos", description="filter used by on_size_mismatch='resize' for every modality ('area' = box filter)"
    )
    include_depth: bool = Field(True, description="store the depth map of each row")
    include_saliency: bool = Field(True, description="store the saliency map of each row")
    depth_maps: str = Field(
        "ground", description="extractor that made the depth maps (ground, or dpt:<model>), recorded in index.json"
    )
    saliency_maps: str = Field(
        "frequency_tuned", description="extractor that made the saliency maps (e.g. frequency_tuned, u2net)"
    )
    splits: list[str] = Field(
        default_factory=lambda: list(SPLITS),
        description="splits to write; rows of other splits are counted as skipped in index.json",
    )
    package_batch_rows: int = Field(
        20000, ge=1, description="rows of one package gathered per pass over it (bounds memory; tars re-read per pass)"
    )

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, splits: list[str]) -> list[str]:
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or not splits or len(set(splits)) != len(splits):
            raise ValueError(f"splits must be distinct names among {list(SPLITS)}, got {splits}")
        return splits

    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in BLOB_COLUMNS if self._includes(m))

    def _includes(self, modality: str) -> bool:
        return {"depth": self.include_depth, "saliency": self.include_saliency}.get(modality, True)
