"""Product photos as RGBA cut-outs: an RGB photo on white gets its alpha from the background, as the official
sampler does; generation (`rad generate`) and validation (`rad data validate`) apply the same rule."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.config import WHITE_TOLERANCE
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
