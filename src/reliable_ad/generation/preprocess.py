"""Product preprocessing of the official sampler, reimplemented: centre zoom to ``image_scale`` of the canvas,
canny edges of the product only, and the dilated inpainting mask (the cut-out itself: `data.cutout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

DILATE_AT_512 = 20  # the official sampler dilates the inpainting mask by a 20 x 20 kernel at 512 px


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
