"""The simulated human reviewer of the embedded world.

It labels any image from its pixels, given the product's mask (the alpha of the product photo) and the
product's real height from its metadata. It never sees how an image was made, so it judges generated images
exactly as it judges RF1M-synth's renderings. Checks run in a fixed order and the first failing one names the
label; the evidence of every check that ran is returned with it.

1. unsuitable: the product photo touches the frame (truncated) or has holes (damaged);
2. indistinctiveness: a busy or cluttered background (noise, blotches, patterns: not a scene), or pixels
   around the product close to the product's colour;
3. shape_hallucination: product-coloured pixels grow out of the silhouette beyond a thin halo;
4. not a scene: no support line across the background (washed-out grey, blotches) -> space_mismatch;
5. space_mismatch: the support line lies below the product's base (the product floats);
6. size_mismatch: a detected reference object (cup or vase, told apart by aspect ratio) implies a product
   height that differs from the metadata by more than the tolerance.

Size can only be judged when a reference object is visible: without one the reviewer cannot tell and returns
"available" for that check, with ``reference: None`` in the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.colour import delta_e, to_lab
from reliable_ad.data.scene import (
    border_band,
    dilate,
    distance_outside,
    find_support_line,
    foreground,
    local_std,
    row_profile,
    window,
)
from reliable_ad.data.synth.catalog import REFERENCES


@dataclass(frozen=True)
class ReviewerConfig:
    """Thresholds, in delta E or in pixels at 64 px (scaled with the image)."""

    min_line_step: float = 14.0  # delta E of a support line between wall and table
    min_line_consistency: float = 0.45  # share of background columns that must show it
    max_texture: float = 3.0  # median local std of L over the background; above it the background is busy
    max_clutter: float = 0.25  # share of background pixels that are foreground objects
    min_contrast: float = 18.0  # median delta E between the product and the ring around it
    ring_px: float = 2.0
    product_colour_de: float = 14.0  # a pixel this close to the product's median colour is product-coloured
    halo_px: float = 1.5  # grown pixels closer than this to the mask are ignored (edge blending)
    min_grown_share: float = 0.01  # of the product's area
    min_grown_px: float = 4.0
    float_tolerance_px: float = 2.0
    foreground_de: float = 15.0
    min_reference_px: float = 4.0
    vase_max_aspect: float = 0.6  # width/height below this is a vase, else a cup
    size_tolerance: float = 1.45  # allowed ratio between measured and expected product height
    min_hole_px: float = 2.0


@dataclass
class Review:
    label: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.label == "available"


def product_mask(product_rgba: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """The product's silhouette: alpha at least half opaque."""
    if product_rgba.ndim != 3 or product_rgba.shape[2] != 4:
        raise ValueError(f"product image must be RGBA (H x W x 4), got shape {product_rgba.shape}")
    return np.asarray(product_rgba[..., 3] >= 128)


def review(
    image: NDArray[np.uint8],
    mask: NDArray[np.bool_],
    height_cm: float,
    config: ReviewerConfig | None = None,
) -> Review:
    """Label `image` (H x W x 3 RGB) given the product `mask` (H x W) and the product's real height."""
    cfg = config or ReviewerConfig()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB (H x W x 3), got shape {image.shape}")
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and product mask {mask.shape} differ in size")
    size = image.shape[0]
    s = size / 64.0
    evidence: dict[str, Any] = {}

    # 1. the product photo itself
    if not mask.any():
        return Review("unsuitable", {"reason": "empty product mask"})
    touches = bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    holes = _hole_area(mask)
    evidence.update(truncated=touches, hole_px=holes)
    if touches or holes >= cfg.min_hole_px * s * s:
        return Review("unsuitable", evidence)

    lab = to_lab(image)
    around = dilate(mask, max(1, round(2 * s)))
    # 2. a busy background is no scene; a background of the product's colour hides it
    line = find_support_line(lab, exclude=around)
    background = ~around
    near_line = background.copy()
    if line is not None:
        k = window(size)
        near_line[max(0, line.row - k) : line.row + k] = False
    texture = float(np.median(local_std(lab[..., 0], max(5, round(5 * s)))[near_line])) if background.any() else 0.0
    profile = row_profile(lab, around | ~border_band(size, 0.1))
    objects = foreground(lab, profile, cfg.foreground_de) & background
    clutter = float(objects.sum() / max(1, background.sum()))
    evidence.update(
        line_row=None if line is None else line.row,
        line_step=None if line is None else round(line.step, 2),
        line_consistency=None if line is None else round(line.consistency, 3),
        texture=round(texture, 3),
        clutter=round(clutter, 3),
    )
    if texture > cfg.max_texture or clutter > cfg.max_clutter:
        evidence["reason"] = "busy background"
        return Review("indistinctiveness", evidence)

    product_lab = np.median(lab[mask], axis=0)
    distance = distance_outside(mask)
    ring = (distance > 0) & (distance <= cfg.ring_px * s)
    contrast = float(np.median(delta_e(lab[ring], product_lab)))
    evidence["contrast"] = round(contrast, 2)
    if contrast < cfg.min_contrast:
        return Review("indistinctiveness", evidence)

    # 3. product-coloured growth out of the silhouette
    grown = _grown_area(lab, mask, product_lab, distance, cfg, s)
    evidence["grown_px"] = grown
    if grown >= max(cfg.min_grown_px * s * s, cfg.min_grown_share * mask.sum()):
        return Review("shape_hallucination", evidence)

    # 4. without a support line across the background there is no scene
    if line is None or line.step < cfg.min_line_step or line.consistency < cfg.min_line_consistency:
        evidence["reason"] = "no support line: not a scene"
        return Review("space_mismatch", evidence)

    # 5. does the product stand on the table?
    base = int(np.nonzero(mask.any(axis=1))[0].max())
    gap = line.row - base
    evidence.update(base_row=base, gap_px=gap)
    if gap > cfg.float_tolerance_px * s:
        return Review("space_mismatch", evidence)

    # 6. scale against a reference object
    rows = np.nonzero(mask.any(axis=1))[0]
    product_px = float(rows.max() - rows.min() + 1)
    reference = _find_reference(objects, cfg, s)
    evidence["reference"] = None
    if reference is not None:
        kind, ref_px = reference
        expected = height_cm / REFERENCES[kind].height_cm
        measured = product_px / ref_px
        ratio = measured / expected
        evidence.update(reference=kind, reference_px=ref_px, size_ratio=round(ratio, 3))
        if max(ratio, 1.0 / ratio) > cfg.size_tolerance:
            return Review("size_mismatch", evidence)
    return Review("available", evidence)


def _hole_area(mask: NDArray[np.bool_]) -> int:
    """Background pixels enclosed by the product (not reachable from the frame)."""
    outside = (~mask).astype(np.uint8)
    flood = np.pad(outside, 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    return int((flood[1:-1, 1:-1] == 1).sum())


def _grown_area(
    lab: NDArray[np.float32],
    mask: NDArray[np.bool_],
    product_lab: NDArray[np.float32],
    distance: NDArray[np.float32],
    cfg: ReviewerConfig,
    s: float,
) -> int:
    """Product-coloured pixels connected to the silhouette, beyond the halo of edge blending."""
    coloured = (delta_e(lab, product_lab) < cfg.product_colour_de) | mask
    _, labels = cv2.connectedComponents(coloured.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[mask])
    attached = np.isin(labels, touching[touching > 0])
    return int((attached & (distance > cfg.halo_px * s)).sum())


def _find_reference(objects: NDArray[np.bool_], cfg: ReviewerConfig, s: float) -> tuple[str, float] | None:
    """The largest upright foreground object clear of the product and the frame, with its kind and height."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(objects.astype(np.uint8), connectivity=8)
    size = objects.shape[0]
    best: tuple[int, str, float] | None = None
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if h < cfg.min_reference_px * s or w > 1.5 * h:
            continue
        if x == 0 or y == 0 or x + w >= size or y + h >= size:
            continue
        kind = "vase" if w / h < cfg.vase_max_aspect else "cup"
        if best is None or area > best[0]:
            best = (area, kind, float(h))
    return None if best is None else (best[1], best[2])


def review_as_dict(result: Review) -> dict[str, Any]:
    return asdict(result)


def _label(mask: NDArray[np.bool_], height_cm: float, image: NDArray[np.uint8]) -> str:
    return review(image, mask, height_cm).label


def reviewer_for(product_rgba: NDArray[np.uint8], height_cm: float) -> Callable[[NDArray[np.uint8]], str]:
    """The reviewer of one product's images (its label of an image): what a product source hands generation,
    so generation counts people's verdicts without knowing who gives them. A partial: it pickles."""
    return partial(_label, product_mask(product_rgba), height_cm)
