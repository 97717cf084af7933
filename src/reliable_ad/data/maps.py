"""Auxiliary maps computed from an image alone, identically when a dataset is made and when a judge runs.

- ``ground``: a classical depth map from the ground-plane cue. Above the support line is the far wall; the
  table comes nearer towards the bottom of the frame; an object takes the depth of the table where its lowest
  pixel stands, so an object that floats above the table is as far as the wall behind it.
- ``frequency_tuned``: saliency as the distance of each blurred pixel's Lab colour from the image's mean
  colour (Achanta et al., 2009). It needs no weights.

Real-world extractors (DPT depth through transformers) live with the judge; a map kind is stored in a model's
config so that training and judging always use the same one.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.colour import to_lab
from reliable_ad.data.scene import border_band, dilate, find_support_line, foreground, row_profile

MapFn = Callable[[NDArray[np.uint8]], NDArray[np.uint8]]
WALL_DEPTH = 40  # 0 = far, 255 = near


def ground_depth(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Ground-plane depth (uint8, near = bright) of an RGB image."""
    size = image.shape[0]
    lab = to_lab(image)
    # objects differ from the bare background at the frame's sides; the line is looked for behind them
    objects = foreground(lab, row_profile(lab, ~border_band(size, 0.1)), 15.0)
    line = find_support_line(lab, exclude=dilate(objects, 1))
    row = line.row if line is not None else size
    rows = np.arange(size, dtype=np.float32)
    span = max(1, size - row)
    table = WALL_DEPTH + 40 + (255 - WALL_DEPTH - 40) * np.clip((rows - row) / span, 0, 1)
    surface = np.where(rows < row, WALL_DEPTH, table).astype(np.float32)
    depth = np.repeat(surface[:, None], image.shape[1], axis=1)
    if objects.any():
        # the lowest object pixel of each column decides that column's object depth
        lowest = size - 1 - np.argmax(objects[::-1], axis=0)
        depth = np.where(objects, surface[lowest][None, :], depth)
    return np.clip(np.rint(depth), 0, 255).astype(np.uint8)


def frequency_tuned_saliency(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Frequency-tuned saliency (uint8, salient = bright) of an RGB image."""
    size = image.shape[0]
    k = max(3, (size // 32) | 1)
    lab = to_lab(np.asarray(cv2.GaussianBlur(image, (k, k), 0), np.uint8))
    distance = np.linalg.norm(lab - lab.reshape(-1, 3).mean(axis=0), axis=-1)
    peak = float(distance.max())
    scaled = distance / peak * 255.0 if peak > 0 else distance
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


DEPTH_EXTRACTORS: dict[str, MapFn] = {"ground": ground_depth}
SALIENCY_EXTRACTORS: dict[str, MapFn] = {"frequency_tuned": frequency_tuned_saliency}


def extractor(kind: str, name: str) -> MapFn:
    """Look up a classical extractor by kind ('depth' or 'saliency') and name."""
    table = DEPTH_EXTRACTORS if kind == "depth" else SALIENCY_EXTRACTORS
    if name not in table:
        raise KeyError(f"unknown {kind} extractor {name!r}; known: {sorted(table)}")
    return table[name]
