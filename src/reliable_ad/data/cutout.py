"""Product photos as RGBA cut-outs: an RGB photo on white gets its alpha from the background, as the official
sampler does; generation (`rad generate`), a catalog (`data.catalog`) and validation (`rad data validate`)
apply the same rule, and place the cut-out on the canvas the same way (`centre_zoom`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.config import WHITE_TOLERANCE
from reliable_ad.data.imageio import decode
from reliable_ad.errors import InputError


class ProductImageError(InputError):
    """A product image that cannot be turned into a cut-out."""


def ensure_alpha(
    image: NDArray[np.uint8],
    source: str = "product image",
    white_tolerance: int = WHITE_TOLERANCE,
    setting: str = "white_tolerance",
) -> NDArray[np.uint8]:
    """RGBA as is; RGB gets alpha = 0 on its white background (the sampler's rule for white backgrounds): the
    pixels within `white_tolerance` of white that are connected to the border, so that a JPEG's ringing around
    the product goes with the background while a light label inside the product stays, and pure white anywhere.

    An RGB image without a near-white pixel on its border has no background to remove: that is an error, because
    keeping it opaque would paste a rectangle into the scene; it says what `setting` would take the border.
    """
    if image.ndim == 3 and image.shape[2] == 4:
        if not (image[..., 3] >= 128).any():
            raise ProductImageError(f"{source}: the alpha channel is empty (fully transparent)")
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ProductImageError(f"{source}: expected RGB or RGBA, got shape {image.shape}")
    near_white: NDArray[np.bool_] = np.all(image >= 255 - white_tolerance, axis=2)
    if not _border(near_white).any():
        needed = 255 - int(_border(image.min(axis=2)).max())
        raise ProductImageError(
            f"{source}: RGB without alpha and without a white background: no border pixel is within "
            f"{white_tolerance} of white; give an RGBA cut-out"
            + (f", or raise {setting} to {needed} if that is its background" if needed < 255 else "")
        )
    _, regions = cv2.connectedComponents(near_white.astype(np.uint8), connectivity=4)
    outside = np.isin(regions, np.unique(_border(regions)[_border(near_white)]))
    background = (outside & near_white) | np.all(image == 255, axis=2)
    if background.all():
        raise ProductImageError(f"{source}: the image is entirely white (within {white_tolerance}): no product")
    alpha = np.where(background, 0, 255).astype(np.uint8)
    return np.dstack([image, alpha])


def _border(values: NDArray[Any]) -> NDArray[Any]:
    """The outermost pixels of an image, as one array."""
    return np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])


def read_product(path: Path, white_tolerance: int, setting: str = "white_tolerance") -> NDArray[np.uint8]:
    """A product file as RGBA: its own alpha, or alpha from its white background (refused with neither;
    `setting` names the knob that would take a light border)."""
    image = decode(path.read_bytes(), str(path))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    rgb_or_rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    return ensure_alpha(rgb_or_rgba, str(path), white_tolerance, setting=setting)


def centre_zoom(rgba: NDArray[np.uint8], size: tuple[int, int], image_scale: float) -> NDArray[np.uint8]:
    """Crop the product's bounding box and scale it to `image_scale` of the canvas, centred.

    (The official code calls this a golden-ratio zoom; it centres the product on the canvas.)
    """
    width, height = size
    mask = rgba[..., 3] >= 128
    ys, xs = np.nonzero(mask)
    crop = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    crop_h, crop_w = crop.shape[:2]
    max_h, max_w = int(height * image_scale), int(width * image_scale)
    fit = min(max_h / crop_h, max_w / crop_w)
    new_w, new_h = max(1, int(crop_w * fit)), max(1, int(crop_h * fit))
    interpolation = cv2.INTER_AREA if fit < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((height, width, 4), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas
