"""A team's catalog as a product source: its photos and `products.jsonl` (see `CatalogConfig`), read and
checked whole when the catalog is opened, so a bad line or photo stops the run before any model loads, named
with its file and line; nothing is dropped silently."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.data.config import CatalogConfig
from reliable_ad.data.cutout import ProductImageError, centre_zoom, read_product
from reliable_ad.data.hashing import folder_hash
from reliable_ad.data.imageio import ImageDecodeError
from reliable_ad.data.layout import UnsafePath, resolve_inside
from reliable_ad.data.products import SPLITS, Product, Split
from reliable_ad.data.reviewer import reviewer_for
from reliable_ad.errors import InputError

CATALOG_FILE = "products.jsonl"
# a product without a split: its share of the hash space (train, validation, test)
HASHED_SPLIT = (0.70, 0.15, 0.15)


class CatalogError(InputError):
    """A catalog that cannot be used: the message names the file and line, or the photo."""


@dataclass(frozen=True)
class CatalogEntry:
    product_id: str
    image: Path
    title: str
    split: Split
    category: str | None = None
    height_cm: float | None = None


def hashed_split(product_id: str) -> Split:
    """A product's split from its id alone: stable across runs, machines and catalog growth."""
    share = int(hashlib.sha256(product_id.encode()).hexdigest()[:8], 16) / 16**8
    train, validation, _ = HASHED_SPLIT
    return "train" if share < train else "validation" if share < train + validation else "test"


def _entry(folder: Path, line: int, text: str, simulated: bool) -> CatalogEntry:
    where = f"{folder / CATALOG_FILE}:{line}"
    try:
        row: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise CatalogError(f"{where}: not a JSON object ({error.msg})") from None
    if not isinstance(row, dict):
        raise CatalogError(f"{where}: not a JSON object")
    for name in ("image", "title"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise CatalogError(f"{where}: field {name!r} is missing or not a non-empty string")
    try:
        image = resolve_inside(folder, row["image"], where)
    except UnsafePath as error:
        raise CatalogError(str(error)) from None
    if not image.is_file():
        raise CatalogError(f"{where}: image {row['image']!r} is not in {folder}")
    product_id = row.get("product_id", Path(row["image"]).stem)
    split = row.get("split", hashed_split(str(product_id)))
    if split not in SPLITS:
        raise CatalogError(f"{where}: field 'split' is {split!r}; one of {', '.join(SPLITS)}")
    height = row.get("height_cm")
    if height is not None and (isinstance(height, bool) or not isinstance(height, int | float) or height <= 0):
        raise CatalogError(f"{where}: field 'height_cm' must be a positive number of centimetres, got {height!r}")
    if simulated and height is None:
        raise CatalogError(f"{where}: no 'height_cm': the simulated reviewer (data.catalog.reviewer) judges size by it")
    category = None if row.get("category") is None else str(row["category"])
    height_cm = None if height is None else float(height)
    return CatalogEntry(str(product_id), image, row["title"], split, category, height_cm)


@dataclass(frozen=True)
class CatalogProducts:
    """The catalog's products, each drawn from its split in an order set by the seed; a draw asking for more
    products than the split holds is refused, saying how many there are."""

    cfg: CatalogConfig
    entries: tuple[CatalogEntry, ...]

    @classmethod
    def open(cls, cfg: CatalogConfig) -> CatalogProducts:
        """Read and check `products.jsonl` and every photo it names; every problem is reported at once."""
        if cfg.path is None:
            raise CatalogError("data.catalog.path is not set: there is no catalog to open")
        folder = cfg.path
        listing = folder / CATALOG_FILE
        if not listing.is_file():
            raise CatalogError(f"{folder}: no {CATALOG_FILE} (one object per product: image, title, ...)")
        entries, problems, seen = [], [], dict[str, int]()
        for line, text in enumerate(listing.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            try:
                entry = _entry(folder, line, text, cfg.reviewer == "simulated")
                if entry.product_id in seen:
                    raise CatalogError(
                        f"{listing}:{line}: product_id {entry.product_id!r} is on line {seen[entry.product_id]} too"
                    )
                read_product(entry.image, cfg.white_tolerance, "data.catalog.white_tolerance")
            except (CatalogError, ImageDecodeError, ProductImageError, OSError) as error:
                problems.append(str(error))
                continue
            seen[entry.product_id] = line
            entries.append(entry)
        if problems:
            header = f"{len(problems)} of the products in {listing} cannot be used:"
            raise CatalogError("\n  ".join([header, *problems]))
        if not entries:
            raise CatalogError(f"{listing}: no products")
        return cls(cfg, tuple(entries))

    def products(
        self, count: int, seed: int, split: Split | None, categories: Sequence[str] | None = None, offset: int = 0
    ) -> list[Product]:
        pool = [e for e in self.entries if (split is None or e.split == split)]
        if categories:
            pool = [e for e in pool if e.category in categories]
        if offset + count > len(pool):
            which = f"{split} " if split else ""
            raise CatalogError(
                f"{self.cfg.path}: {offset + count} {which}products asked for (from the {offset + 1}st of seed "
                f"{seed}), the catalog has {len(pool)}"
                + (f" in the categories {', '.join(categories)}" if categories else "")
            )
        order = np.random.default_rng(seed).permutation(len(pool))[offset : offset + count]
        return [self._product(pool[int(k)]) for k in order]

    def _product(self, entry: CatalogEntry) -> Product:
        cfg = self.cfg
        cut = read_product(entry.image, cfg.white_tolerance, "data.catalog.white_tolerance")
        rgba = centre_zoom(cut, (cfg.size, cfg.size), cfg.image_scale)
        # `open` refused a simulated reviewer for a product without its height
        reviewer = reviewer_for(rgba, entry.height_cm) if cfg.reviewer == "simulated" and entry.height_cm else None
        return Product(entry.product_id, rgba, entry.title, entry.height_cm, entry.category, entry.split, reviewer)

    def version(self) -> str:
        assert self.cfg.path is not None
        return folder_hash(self.cfg.path)
