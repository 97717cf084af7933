"""Products to generate for, from wherever a team keeps them: RF1M-synth by seed (the embedded world,
`data.synth.products`) or a catalog folder of product photos (`data.catalog`). RFFT, the evaluation, the
snapshot selection and the feedback rounds draw their products from one `ProductSource` and never know which.

A product comes with its reviewer (`reviewer`) when its source has people at hand: the embedded world's
simulated reviewer. A catalog's products have none: people label their images later, through the review
queue, and the figures that need people's verdicts are NaN until then."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

# a role's products: RFFT and labelled batches train on "train", the snapshot choice validates on
# "validation", the evaluation counts on "test"; None keeps each product's own split (a labelled batch whose
# rows also train and test the judge)
Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
# people's label (an RF1M class name) of an image generated for the product
Reviewer = Callable[[NDArray[np.uint8]], str]


@dataclass
class Product:
    key: str
    rgba: NDArray[np.uint8]  # on the canvas, as generation takes it
    caption: str
    height_cm: float | None = None
    category: str | None = None
    split: str | None = None
    reviewer: Reviewer | None = None  # who labels its images now (the simulated reviewer); None: people, later


class ProductSource(Protocol):
    """Where products come from. Draws are deterministic: the same arguments give the same products."""

    def products(
        self, count: int, seed: int, split: Split | None, categories: Sequence[str] | None = None, offset: int = 0
    ) -> list[Product]:
        """Products `offset` .. `offset + count` of the draw by `seed` from `split` (None: every split, each
        product keeping its own), of `categories` when given; each one another product."""
        ...

    def version(self) -> str:
        """What the products depend on (a catalog's folder hash), for the fingerprints of runs made on them."""
        ...
