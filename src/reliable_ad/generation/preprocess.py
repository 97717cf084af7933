"""Product preprocessing of the official sampler, reimplemented: canny edges of the product only and the
dilated inpainting mask (the cut-out and its centre zoom: `data.cutout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

DILATE_AT_512 = 20  # the official sampler dilates the inpainting mask by a 20 x 20 kernel at 512 px


@dataclass
class ControlInputs:
    """What the inpainting ControlNet pipeline takes for one product."""

    init_image: NDArray[np.uint8]  # H x W x 3: the product on black
    inpaint_mask: NDArray[np.uint8]  # H x W: 255 where the background is generated
    control_image: NDArray[np.uint8]  # H x W x 3: canny edges of the product only
    paste_mask: NDArray[np.bool_]  # H x W: where the original product is pasted back


def control_inputs(rgba: NDArray[np.uint8], low_threshold: int = 100, high_threshold: int = 200) -> ControlInputs:
    """Inpainting mask (255 - alpha, dilated as the sampler does at this size) and canny control image."""
    size = rgba.shape[0]
    alpha = rgba[..., 3]
    paste = alpha >= 128
    kernel = max(1, round(DILATE_AT_512 * size / 512))
    inpaint = np.asarray(cv2.dilate((255 - alpha).astype(np.uint8), np.ones((kernel, kernel), np.uint8)), np.uint8)
    product_only = rgba[..., :3].copy()
    product_only[~paste] = 0
    edges = cv2.Canny(product_only, low_threshold, high_threshold)
    return ControlInputs(
        init_image=product_only,
        inpaint_mask=inpaint,
        control_image=np.repeat(edges[..., None], 3, axis=2),
        paste_mask=paste,
    )


def paste_product(image: NDArray[np.uint8], rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Blend the original product back over a generated image through its alpha, as the sampler does."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * rgba[..., :3].astype(np.float32)
    return np.asarray(np.rint(blended), dtype=np.uint8)
