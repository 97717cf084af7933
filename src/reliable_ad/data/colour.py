"""Colour arithmetic in CIELAB, where Euclidean distance (delta E 1976) tracks perceived difference."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from numpy.typing import NDArray

Lab = NDArray[np.float32]


def to_lab(rgb: NDArray[np.uint8]) -> Lab:
    """uint8 RGB (..., 3) -> float32 Lab with L in [0, 100]."""
    flat = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape).astype(np.float32)


def from_lab(lab: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Inverse of `to_lab`, clipped to the displayable range."""
    flat = np.asarray(lab, dtype=np.float32).reshape(-1, 1, 3)
    rgb = cv2.cvtColor(flat, cv2.COLOR_Lab2RGB).reshape(np.shape(lab))
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def delta_e(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float32]:
    """Delta E 1976 between Lab arrays (broadcasting over leading axes)."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def colour_delta(rgb_a: tuple[int, int, int], rgb_b: tuple[int, int, int]) -> float:
    """Delta E between two RGB colours (cached: palettes are small and asked about again and again)."""
    pair = to_lab(np.array([rgb_a, rgb_b], dtype=np.uint8))
    return float(delta_e(pair[0], pair[1]))
