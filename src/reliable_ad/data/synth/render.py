"""The procedural renderer of RF1M-synth: one product photo and one scene per call.

A scene is a wall above a table whose back edge is a horizontal support line, lit from one side, with an
optional reference object of known size standing beside the product. The product cut-out is placed the way
the official sampler places it (centred, scaled to ``image_scale`` of the canvas), and every label class comes
from one visible, rule-defined defect:

- available: product base on the table, contrasting background, reference object to scale;
- unsuitable: the product photo itself is truncated (cut by the frame) or damaged (holes in the product);
- space_mismatch: the table edge lies below the product's base, which floats in front of the wall;
- size_mismatch: the reference object is drawn at the wrong scale for the product's real height;
- indistinctiveness: the background has the product's colour, or is a busy pattern;
- shape_hallucination: parts in the product's colour grow out of its silhouette (pedestal, legs, arm, knob).

``difficulty`` in [0, 1] sets the defect strength: 1 is the default and the clearest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.colour import colour_delta, from_lab, to_lab
from reliable_ad.data.synth.catalog import (
    CATEGORIES,
    PRODUCT_COLOURS,
    REFERENCE_COLOURS,
    REFERENCES,
    RGB,
    TABLE_COLOURS,
    WALL_COLOURS,
    size_class,
)

Polygon = list[tuple[float, float]]

# Contrast the renderer guarantees for an available scene (delta E); the reviewer's thresholds sit between
# these and the defects' values.
MIN_BACKGROUND_CONTRAST = 32.0
MIN_REFERENCE_CONTRAST = 30.0
MIN_WALL_TABLE_CONTRAST = 18.0
SHADOW_DARKENING = 8.0  # L units: visible, yet below the reviewer's foreground threshold
NOISE_SIGMA = 1.2  # RGB units


class NoRoomForReference(RuntimeError):
    """A size-mismatch layout left no room for a reference object: draw the layout again."""


@dataclass(frozen=True)
class ProductSpec:
    """One product of the catalogue; several samples may show the same product."""

    product_id: str
    category: str
    colour: str
    height_cm: float
    aspect: float
    shape_seed: int

    @property
    def title(self) -> str:
        noun = CATEGORIES[self.category].noun
        return f"{self.colour} {noun}, {self.height_cm:.0f} cm"

    @property
    def size_class(self) -> str:
        return size_class(self.height_cm)


@dataclass
class Rendering:
    image: NDArray[np.uint8]  # H x W x 3 RGB, the "generated image"
    product: NDArray[np.uint8]  # H x W x 4 RGBA cut-out on the same canvas
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)  # hidden render parameters, for audits only


def make_product(rng: np.random.Generator, product_id: str, categories: list[str]) -> ProductSpec:
    category = CATEGORIES[categories[int(rng.integers(len(categories)))]]
    colours = list(PRODUCT_COLOURS)
    return ProductSpec(
        product_id=product_id,
        category=category.name,
        colour=colours[int(rng.integers(len(colours)))],
        height_cm=float(np.round(rng.uniform(*category.height_cm))),
        aspect=float(rng.uniform(*category.aspect)),
        shape_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------------------- shapes


def _silhouette_polygons(category: str, rng: np.random.Generator) -> list[Polygon]:
    """Polygons in unit box coordinates (x right, y down) whose union is the product's silhouette."""

    def j(v: float) -> float:
        return float(np.clip(v + rng.uniform(-0.03, 0.03), 0.0, 1.0))

    if category == "bottle":
        cap, neck = j(0.3), j(0.38)
        return [
            [
                (cap, 0),
                (1 - cap, 0),
                (1 - cap, 0.12),
                (1 - neck, 0.12),
                (1 - neck, 0.3),
                (1, j(0.42)),
                (1, 1),
                (0, 1),
                (0, j(0.42)),
                (neck, 0.3),
                (neck, 0.12),
                (cap, 0.12),
            ]
        ]
    if category == "box":
        return [[(0, 0), (1, 0), (1, 1), (0, 1)]]
    if category == "jar":
        lid = j(0.08)
        return [
            [(lid, 0), (1 - lid, 0), (1 - lid, 0.25), (lid, 0.25)],
            [(0, 0.3), (0.05, 0.25), (0.95, 0.25), (1, 0.3), (1, 0.92), (0.93, 1), (0.07, 1), (0, 0.92)],
        ]
    if category == "lamp":
        top = j(0.15)
        return [
            [(top, 0), (1 - top, 0), (1, 0.45), (0, 0.45)],
            [(0.44, 0.45), (0.56, 0.45), (0.56, 0.9), (0.44, 0.9)],
            [(j(0.2), 0.9), (1 - j(0.2), 0.9), (1, 1), (0, 1)],
        ]
    if category == "sneaker":
        return [
            [
                (0, 0.78),
                (j(0.05), 0.3),
                (0.3, 0),
                (0.45, j(0.05)),
                (0.55, j(0.4)),
                (0.85, j(0.5)),
                (1, 0.7),
                (1, 1),
                (0, 1),
            ]
        ]
    if category == "speaker":
        return [[(0.1, 0), (0.9, 0), (1, 0.08), (1, 0.92), (0.9, 1), (0.1, 1), (0, 0.92), (0, 0.08)]]
    if category == "mug":
        return [[(0, 0), (0.8, 0), (0.8, 1), (0, 1)], [(0.78, 0.2), (0.93, 0.22), (1, 0.4), (0.95, 0.62), (0.78, 0.7)]]
    if category == "toaster":
        return [
            [(0.2, 0), (0.42, 0), (0.42, 0.14), (0.2, 0.14)],
            [(0.58, 0), (0.8, 0), (0.8, 0.14), (0.58, 0.14)],
            [(0.06, 0.12), (0.94, 0.12), (1, 0.2), (1, 1), (0, 1), (0, 0.2)],
        ]
    if category == "kettle":  # handle on one side, spout on the other: protrusions that belong to the product
        return [
            [(0.18, 0.2), (0.82, 0.2), (0.88, 1), (0.12, 1)],
            [(0.35, 0.08), (0.65, 0.08), (0.65, 0.2), (0.35, 0.2)],
            [(0.8, 0.3), (0.95, 0.3), (1, 0.55), (0.95, 0.8), (0.82, 0.8)],
            [(0.18, 0.45), (0.0, 0.25), (0.04, 0.2), (0.2, 0.35)],
        ]
    if category == "stool":  # a seat on four legs
        leg = j(0.1)
        seat: Polygon = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.14), (0.0, 0.14)]
        legs = [[(x, 0.12), (x + leg, 0.12), (x + leg, 1.0), (x, 1.0)] for x in (0.02, 0.3, 0.6, 0.98 - leg)]
        return [seat, *legs]
    if category == "candle":
        return [[(0.45, 0), (0.55, 0), (0.55, 0.1), (0.45, 0.1)], [(0, 0.1), (1, 0.1), (1, 1), (0, 1)]]
    if category == "plant_pot":
        rim = j(0.15)
        return [[(0, 0), (1, 0), (1, rim), (0.9, rim), (0.8, 1), (0.2, 1), (0.1, rim), (0, rim)]]
    if category == "backpack":
        return [
            [(0.35, 0), (0.65, 0), (0.65, 0.1), (0.35, 0.1)],
            [(0.05, 0.15), (0.2, 0.08), (0.8, 0.08), (0.95, 0.15), (1, 1), (0, 1)],
            [(0.2, 0.55), (0.8, 0.55), (0.8, 0.9), (0.2, 0.9)],
        ]
    if category == "gadget":  # a random union of blocks, each product its own shape
        parts: list[Polygon] = [[(0.2, 0.3), (0.8, 0.3), (0.8, 1), (0.2, 1)]]
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 0.6), rng.uniform(0, 0.7)
            x1, y1 = min(1.0, x0 + rng.uniform(0.2, 0.5)), min(1.0, y0 + rng.uniform(0.15, 0.4))
            if x1 < 0.25 or x0 > 0.75 or y1 < 0.35:  # keep every block touching the body
                x0, x1 = max(x0, 0.15), max(x1, 0.35)
                y1 = max(y1, 0.4)
            parts.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        return parts
    raise ValueError(f"no silhouette for category {category!r}")


def _fill(mask: NDArray[np.uint8], polygons: list[Polygon], left: float, top: float, w: float, h: float) -> None:
    """Rasterise unit-box polygons into `mask` at box (left, top, w, h), with 1/16 px precision."""
    shift = 4
    scaled = [
        np.array([[round((left + x * w) * 16), round((top + y * h) * 16)] for x, y in poly], np.int32)
        for poly in polygons
    ]
    for poly in scaled:  # one call each: a single call would XOR the overlaps (even-odd rule)
        cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=shift)


def _reference_polygons(kind: str) -> list[Polygon]:
    if kind == "cup":
        return [[(0, 0), (1, 0), (0.9, 1), (0.1, 1)]]
    if kind == "vase":
        return [[(0.3, 0), (0.7, 0), (0.65, 0.2), (1, 0.55), (0.85, 1), (0.15, 1), (0, 0.55), (0.35, 0.2)]]
    raise ValueError(f"no reference object {kind!r}")


# ----------------------------------------------------------------------------------------------- colours


def _pick(rng: np.random.Generator, palette: dict[str, RGB], ok: Any) -> tuple[str, RGB]:
    names = [n for n, rgb in palette.items() if ok(rgb)]
    if not names:
        raise RuntimeError("no colour in the palette satisfies the contrast rules")
    name = names[int(rng.integers(len(names)))]
    return name, palette[name]


def _shade(base: RGB, lightness: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Colour `base` with a per-pixel L offset (H x W) -> H x W x 3 RGB."""
    lab = to_lab(np.array(base, np.uint8)[None, None, :]).reshape(3)
    field_ = np.empty((*lightness.shape, 3), np.float32)
    field_[..., 0] = np.clip(lab[0] + lightness, 0, 100)
    field_[..., 1] = lab[1]
    field_[..., 2] = lab[2]
    return from_lab(field_)


def _offset_lightness(base: RGB, delta_l: float) -> RGB:
    lab = to_lab(np.array(base, np.uint8)[None, :]).reshape(3)
    lab[0] = np.clip(lab[0] + delta_l, 0, 100)
    r, g, b = (int(v) for v in from_lab(lab[None, :]).reshape(3))
    return (r, g, b)


# ----------------------------------------------------------------------------------------------- render


def render(
    product: ProductSpec,
    label: str,
    size: int,
    rng: np.random.Generator,
    difficulty: float = 1.0,
    image_scale: tuple[float, float] = (0.4, 0.55),
    reference_prob: float = 0.9,
) -> Rendering:
    """Render one sample of `product` whose visible defect (or absence of one) is `label`."""
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
    s = size / 64.0  # the geometry is designed at 64 px and scales with the canvas
    d = difficulty
    params: dict[str, Any] = {"label": label}
    shape_rng = np.random.default_rng(product.shape_seed)
    polygons = _silhouette_polygons(product.category, shape_rng)

    # --- product placement, as the official sampler's centre zoom places a cut-out
    scale = rng.uniform(*image_scale)
    if product.aspect <= 1.0:
        h = scale * size
        w = h * product.aspect
    else:
        w = scale * size
        h = w / product.aspect
    cx = size / 2 + rng.normal(0, 0.02 * size)
    cy = size / 2 + rng.normal(0, 0.02 * size)
    left, top = cx - w / 2, cy - h / 2
    variant = None
    mask_u8 = np.zeros((size, size), np.uint8)
    _fill(mask_u8, polygons, left, top, w, h)
    if label == "unsuitable":
        # A hole needs room inside the silhouette; a product too thin for one is truncated instead.
        roomy = cv2.distanceTransform(mask_u8, cv2.DIST_L2, 3).max() >= 3.0
        variant = "damaged" if roomy and rng.random() < 0.5 else "truncated"
    if variant == "truncated":  # move the silhouette itself (not its box) 15-35% past one side of the frame
        side = ["top", "left", "right", "bottom"][int(rng.integers(4))]
        cut = rng.uniform(0.15, 0.35)
        ys, xs = np.nonzero(mask_u8)
        extent_h, extent_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        if side == "top":
            top -= ys.min() + cut * extent_h
        elif side == "bottom":
            top += size - 1 - ys.max() + cut * extent_h
        elif side == "left":
            left -= xs.min() + cut * extent_w
        else:
            left += size - 1 - xs.max() + cut * extent_w
        params["truncated_side"] = side
        mask_u8[:] = 0
        _fill(mask_u8, polygons, left, top, w, h)
    if variant == "damaged":
        for _ in range(int(rng.integers(1, 4))):
            inside = cv2.distanceTransform(mask_u8, cv2.DIST_L2, 5)
            radius = max(1, int(rng.uniform(0.025, 0.05) * size))
            ys, xs = np.nonzero(inside >= radius + 2)  # keep a rim: a hole, not a bite
            if len(ys) == 0:
                radius = max(1, round(s))
                ys, xs = np.nonzero(inside >= radius + 2)
            if len(ys) == 0:
                break
            i = int(rng.integers(len(ys)))
            cv2.circle(mask_u8, (int(xs[i]), int(ys[i])), radius, 0, -1)
    mask = mask_u8.astype(bool)
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    base = int(rows.max())  # the product's lowest row: where it should touch the table
    p_top, p_left, p_right = int(rows.min()), int(cols.min()), int(cols.max())
    params.update(scale=round(float(scale), 4), base_row=base, variant=variant)

    # --- product colours: gentle side light, a highlight band, darker details stay in the colour family
    light = 1.0 if rng.random() < 0.5 else -1.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xn = (xx - left) / max(w, 1.0)
    shading = light * (xn - 0.5) * 8.0 + 5.0 * np.exp(-(((xn - 0.28) / 0.08) ** 2))
    product_rgb_base = PRODUCT_COLOURS[product.colour]
    product_layer = _shade(product_rgb_base, shading.astype(np.float32))

    # --- background colours
    hallucination_part = None
    if label == "indistinctiveness":
        variant = "same_colour" if rng.random() < 0.6 else "busy"
        params["variant"] = variant
    if variant == "same_colour":
        wall_name = product.colour
        jitter = (1.0 - d) * 10.0 + 2.0
        wall = _offset_lightness(product_rgb_base, float(rng.uniform(-jitter, jitter)))
        table_name = product.colour
        table = _offset_lightness(product_rgb_base, float(rng.choice([-1.0, 1.0]) * (11.0 + 4.0 * (1.0 - d))))
    else:
        wall_name, wall = _pick(
            rng, WALL_COLOURS, lambda c: colour_delta(c, product_rgb_base) >= MIN_BACKGROUND_CONTRAST
        )
        table_name, table = _pick(
            rng,
            TABLE_COLOURS,
            lambda c: (
                colour_delta(c, product_rgb_base) >= MIN_BACKGROUND_CONTRAST
                and colour_delta(c, wall) >= MIN_WALL_TABLE_CONTRAST
            ),
        )
    params.update(wall=wall_name, table=table_name)

    # --- grown parts (shape hallucination) extend the object that must stand on the table
    parts = np.zeros((size, size), np.uint8)
    stand_row = base
    if label == "shape_hallucination":
        hallucination_part = ["pedestal", "legs", "arm", "knob"][int(rng.integers(4))]
        grow = 0.6 + 0.4 * d
        if hallucination_part == "pedestal":
            pw = (p_right - p_left) * rng.uniform(0.6, 1.0)
            ph = max(3.0, size * rng.uniform(0.06, 0.09) * grow)
            mid = (p_left + p_right) / 2
            _fill(parts, [[(0, 0), (1, 0), (1, 1), (0, 1)]], mid - pw / 2, base + 0.5, pw, ph)
            stand_row = int(base + ph)
        elif hallucination_part == "legs":
            lw = max(1.5, 0.035 * size)
            lh = max(4.0, size * rng.uniform(0.08, 0.12) * grow)
            # under the outermost columns where the product touches its base line, so they grow out of it
            feet = np.nonzero(mask[base])[0]
            for x in (feet.min(), feet.max() + 1 - lw):
                _fill(parts, [[(0, 0), (1, 0), (1, 1), (0, 1)]], float(x), base + 0.5, lw, lh)
            stand_row = int(base + lh)
        elif hallucination_part == "arm":
            reach = max(4.0, size * rng.uniform(0.08, 0.12) * grow)
            thick = max(2.5, size * rng.uniform(0.045, 0.07))
            y0 = p_top + (base - p_top) * rng.uniform(0.3, 0.6)
            band = np.nonzero(mask[int(y0) : int(y0 + thick) + 1].any(axis=0))[0]
            if rng.random() < 0.5:  # the arm starts at the silhouette's edge in its own rows
                start = float(band.max())
                _fill(parts, [[(0, 0), (1, 0), (1, 1), (0, 1)]], start, y0, reach + 1, thick)
            else:
                start = float(band.min())
                _fill(parts, [[(0, 0), (1, 0), (1, 1), (0, 1)]], start - reach, y0, reach + 1, thick)
        else:  # knob on top, standing on the silhouette's highest point under it
            kw = max(3.0, (p_right - p_left) * rng.uniform(0.25, 0.4))
            kh = max(4.0, size * rng.uniform(0.07, 0.1) * grow)
            mid = (p_left + p_right) / 2 + rng.uniform(-0.2, 0.2) * (p_right - p_left)
            under = mask[:, max(0, int(mid - kw / 2)) : int(mid + kw / 2) + 1]
            roof = int(np.nonzero(under.any(axis=1))[0].min())
            _fill(parts, [[(0.15, 0), (0.85, 0), (1, 1), (0, 1)]], mid - kw / 2, roof - kh + 1, kw, kh)
        parts[mask] = 0
        params.update(part=hallucination_part, part_pixels=int(parts.sum()))
    stand_row = min(stand_row, size - 1)

    # --- the support line
    min_table = max(3, round(0.06 * size))
    if label == "space_mismatch":
        gap = round(size * (0.05 + 0.05 * d + rng.uniform(0.0, 0.04)))
        line = min(base + max(gap, 3), size - min_table)
        params["gap_px"] = line - base
    else:
        line = stand_row - int(rng.integers(1, max(2, round(0.1 * size))))
    line = int(np.clip(line, round(0.3 * size), size - min_table))
    params["line_row"] = line

    # --- wall and table with light falloff
    light_h = rng.uniform(-1, 1)
    wall_l = (light_h * (xx / size - 0.5) * 6.0 + (yy / size - 0.5) * 4.0).astype(np.float32)
    table_l = (light_h * (xx / size - 0.5) * 4.0 + (yy / size - 1.0) * 3.0).astype(np.float32)
    scene = np.where((yy < line)[..., None], _shade(wall, wall_l), _shade(table, table_l))
    if variant == "busy":
        period = max(2, round(rng.uniform(2, 4) * s))
        second_name, second = _pick(rng, WALL_COLOURS, lambda c: colour_delta(c, wall) >= 15.0 + 15.0 * d)
        pattern = (xx // period).astype(int) % 2 == 1
        if rng.random() < 0.5:
            pattern ^= (yy // period).astype(int) % 2 == 1
        scene[pattern] = second
        params.update(pattern_colour=second_name, period=period)

    # --- reference object beside the product
    ref_rgb: RGB | None = None
    want_reference = label == "size_mismatch" or rng.random() < reference_prob
    if want_reference and label != "unsuitable":
        ref_base = stand_row if label != "space_mismatch" else line + int(rng.integers(1, max(2, round(0.05 * size))))
        ref_base = min(ref_base, size - 2)
        px_per_cm = (base - p_top + 1) / product.height_cm
        options = []
        gap_x = max(3.0, 0.06 * size)
        min_h = max(5.0, 5.0 * s)
        # A reference object never fills most of the free background, so the support line stays visible.
        max_w = 0.4 * (size - (p_right - p_left))
        for kind, ref in REFERENCES.items():
            factors = (
                [1.0]
                if label != "size_mismatch"
                else [
                    f := 1.9 + 0.4 * d + rng.uniform(0, 0.4),
                    1.0 / f,
                ]
            )
            for factor in factors:
                rh = ref.height_cm * px_per_cm * factor
                rw = rh * ref.aspect
                if not (min_h <= rh <= ref_base - 2) or rw > max_w:
                    continue
                for side in ("left", "right"):
                    room = p_left - gap_x - 2 if side == "left" else size - 3 - (p_right + gap_x)
                    if hallucination_part == "arm":
                        room -= size * 0.14
                    if room >= rw:
                        options.append((kind, factor, side, rh, rw, room))
        if options:
            kind, factor, side, rh, rw, room = options[int(rng.integers(len(options)))]
            offset = rng.uniform(0, room - rw)
            rx = p_left - gap_x - rw - offset if side == "left" else p_right + gap_x + offset
            if hallucination_part == "arm" and side == "left":
                rx -= size * 0.14
            elif hallucination_part == "arm":
                rx += size * 0.14
            _, ref_rgb = _pick(
                rng,
                REFERENCE_COLOURS,
                lambda c: (
                    colour_delta(c, product_rgb_base) >= MIN_REFERENCE_CONTRAST
                    and colour_delta(c, wall) >= 22.0
                    and colour_delta(c, table) >= 22.0
                ),
            )
            ref_mask = np.zeros((size, size), np.uint8)
            _fill(ref_mask, _reference_polygons(kind), rx, ref_base + 1 - rh, rw, rh)
            _draw_shadow(scene, table, line, (rx + rw / 2, ref_base), rw * 0.6, s)
            scene[ref_mask.astype(bool)] = _shade(ref_rgb, (light * ((xx - rx) / max(rw, 1) - 0.5) * 6.0))[
                ref_mask.astype(bool)
            ]
            params.update(reference=kind, reference_factor=round(float(factor), 3), reference_px=round(rh, 2))
        elif label == "size_mismatch":
            raise NoRoomForReference(f"product {product.product_id}: no reference object fits this layout")

    # --- contact shadow, grown parts, product
    if label != "space_mismatch":
        _draw_shadow(scene, table, line, ((p_left + p_right) / 2, stand_row), (p_right - p_left) * 0.6, s)
    grown = parts.astype(bool)
    scene[grown] = product_layer[grown]
    scene[mask] = product_layer[mask]
    noisy = scene.astype(np.float32) + rng.normal(0, NOISE_SIGMA, scene.shape).astype(np.float32)
    image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    image[mask] = product_layer[mask]  # the product is pasted back unchanged, as in the sampler

    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = product_layer
    rgba[..., 3] = mask.astype(np.uint8) * 255
    rgba[~mask, :3] = 0
    wall_phrase = "striped" if variant == "busy" else wall_name
    prompt = (
        f"front view of a product placed on a {table_name} desktop, {wall_phrase} walls, "
        "soft light, commercial photography"
    )
    return Rendering(image=image, product=rgba, prompt=prompt, params=params)


def _draw_shadow(
    scene: NDArray[np.uint8], table: RGB, line: int, centre: tuple[float, float], half_width: float, s: float
) -> None:
    """A soft contact shadow on the table (never on the wall) under an object standing at `centre`."""
    cx, cy = centre
    if cy < line:
        return
    shadow_mask = np.zeros(scene.shape[:2], np.uint8)
    axes = (max(1, round(half_width)), max(1, round(1.5 * s)))
    cv2.ellipse(shadow_mask, (round(cx), round(cy)), axes, 0, 0, 360, 1, -1)
    shadow_mask[:line] = 0
    scene[shadow_mask.astype(bool)] = _offset_lightness(table, -SHADOW_DARKENING)
