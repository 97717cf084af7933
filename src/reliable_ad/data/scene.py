"""Pixel measurements of a product scene, shared by the reviewer and the classical depth map.

Everything here reads pixels (and, where given, the product mask) and nothing else, so it works on
renderings and on generated images alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from reliable_ad.data.colour import delta_e

BoolMap = NDArray[np.bool_]
FloatMap = NDArray[np.float32]


@dataclass(frozen=True)
class SupportLine:
    """The horizontal boundary between wall (above) and table (below)."""

    row: int  # first row of the table
    step: float  # delta E between the wall and table colours at the line
    consistency: float  # share of background columns that show the step


def window(size: int) -> int:
    """Half-height of the row windows compared across a candidate line: 2 px at 64 px, scaled."""
    return max(2, round(2 * size / 64))


def row_profile(lab: FloatMap, exclude: BoolMap | None) -> FloatMap:
    """Per-row (lower) median Lab colour over the pixels not excluded: the background model of each row.

    A row with every pixel excluded takes the median of the whole row.
    """
    if exclude is None or not exclude.any():
        return np.median(lab, axis=1).astype(np.float32)
    counts = (~exclude).sum(axis=1)
    empty = counts == 0
    keep = ~exclude | empty[:, None]
    counts = np.where(empty, lab.shape[1], counts)
    ordered = np.sort(np.where(keep[..., None], lab, np.inf), axis=1)  # kept pixels first, per channel
    middle = ((counts - 1) // 2)[:, None, None]
    return np.take_along_axis(ordered, np.broadcast_to(middle, (lab.shape[0], 1, 3)), axis=1)[:, 0].astype(np.float32)


def border_band(size: int, share: float) -> BoolMap:
    """Columns within `share` of the width from either side: where the bare background is most likely."""
    band = np.zeros((size, size), bool)
    width = max(1, round(share * size))
    band[:, :width] = True
    band[:, -width:] = True
    return band


def find_support_line(lab: FloatMap, exclude: BoolMap | None = None) -> SupportLine | None:
    """Find the horizontal colour step that runs across most of the background, if any.

    Every background column votes with the colour step it shows at each row; the line is the row with the
    largest median step, so objects standing across the line (in fewer than half the columns) do not move it.
    """
    height, width = lab.shape[:2]
    k = window(height)
    if height < 4 * k:
        return None
    cumulative = np.concatenate([np.zeros((1, width, 3), np.float32), np.cumsum(lab, axis=0, dtype=np.float32)])
    rows = np.arange(k, height - k + 1)
    above = (cumulative[rows] - cumulative[rows - k]) / k
    below = (cumulative[rows + k] - cumulative[rows]) / k
    steps = delta_e(above, below)  # rows x columns
    if exclude is None:
        valid = np.ones_like(steps, dtype=bool)
    else:
        blocked = np.concatenate([np.zeros((1, width), np.int32), np.cumsum(exclude, axis=0, dtype=np.int32)])
        valid = (blocked[rows + k] - blocked[rows - k]) == 0
    enough = valid.sum(axis=1) >= max(4, width // 8)
    if not enough.any():
        return None
    counts = valid.sum(axis=1)
    ordered = np.sort(np.where(valid, steps, np.inf), axis=1)  # valid columns' steps first, ascending
    middle = np.clip((counts - 1) // 2, 0, steps.shape[1] - 1)  # the (lower) median
    scores = np.where(enough, ordered[np.arange(len(rows)), middle], -1.0)
    best = int(np.argmax(scores))
    step = float(scores[best])
    column_steps = steps[best][valid[best]]
    consistency = float((column_steps >= 0.5 * step).mean())
    return SupportLine(row=int(rows[best]), step=step, consistency=consistency)


def local_std(channel: FloatMap, size: int) -> FloatMap:
    """Standard deviation in a size x size neighbourhood (texture energy)."""
    mean = cv2.blur(channel, (size, size))
    mean_sq = cv2.blur(channel * channel, (size, size))
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0)).astype(np.float32)


def foreground(lab: FloatMap, profile: FloatMap, threshold: float) -> BoolMap:
    """Pixels that differ from their row's background colour by more than `threshold` delta E."""
    return np.asarray(delta_e(lab, profile[:, None, :]) > threshold)


def dilate(mask: BoolMap, radius: int) -> BoolMap:
    """Grow a mask by `radius` pixels (square structuring element)."""
    if radius <= 0:
        return mask
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def distance_outside(mask: BoolMap) -> FloatMap:
    """Euclidean distance of every pixel to the nearest mask pixel (0 inside the mask)."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3).astype(np.float32)
