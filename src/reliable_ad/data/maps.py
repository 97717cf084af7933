"""Auxiliary maps computed from an image alone, identically when a dataset is made and when a judge runs.

- ``ground``: a classical depth map from the ground-plane cue. Above the support line is the far wall; the
  table comes nearer towards the bottom of the frame; an object takes the depth of the table where its lowest
  pixel stands, so an object that floats above the table is as far as the wall behind it.
- ``frequency_tuned``: saliency as the distance of each blurred pixel's Lab colour from the image's mean
  colour (Achanta et al., 2009). It needs no weights.

- ``dpt:<model>``: depth from a DPT model through transformers (``<model>``: a local folder, or a hub id when
  ``HF_HUB_OFFLINE=0``), the kind of maps RF1M ships. Relative inverse depth, scaled per image to 0-255 so
  that near is bright, as with ``ground``.

The extractor's name is stored in a model's config (and the dataset's in index.json) so that training and
judging always use the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from reliable_ad.data.colour import to_lab
from reliable_ad.data.scene import border_band, dilate, find_support_line, foreground, row_profile
from reliable_ad.errors import InputError

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


class DPTDepth:
    """Depth maps from a transformers depth-estimation model (DPT and its kin) with its own image processor."""

    def __init__(self, source: str) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            self.processor: Any = AutoImageProcessor.from_pretrained(source)
            self.model = AutoModelForDepthEstimation.from_pretrained(source, use_safetensors=True).eval()
        except OSError as error:
            raise FileNotFoundError(
                f"depth extractor dpt:{source}: no depth model there ({error}); give a local folder, or a hub id "
                "with HF_HUB_OFFLINE=0"
            ) from error

    @torch.no_grad()
    def __call__(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        inputs = self.processor(images=image, return_tensors="pt")
        predicted = self.model(**inputs).predicted_depth  # 1 x h x w, larger = nearer
        depth = torch.nn.functional.interpolate(predicted[:, None], size=image.shape[:2], mode="bilinear")[0, 0]
        low, high = float(depth.min()), float(depth.max())
        scaled = (depth - low) / (high - low) * 255.0 if high > low else torch.zeros_like(depth)
        return scaled.round().clamp(0, 255).to(torch.uint8).numpy()


DEPTH_EXTRACTORS: dict[str, MapFn] = {"ground": ground_depth}
SALIENCY_EXTRACTORS: dict[str, MapFn] = {"frequency_tuned": frequency_tuned_saliency}
DPT_PREFIX = "dpt:"


def extractor(kind: str, name: str) -> MapFn:
    """Look up an extractor by kind ('depth' or 'saliency') and name (``dpt:<model>`` loads a DPT model)."""
    if kind == "depth" and name.startswith(DPT_PREFIX) and len(name) > len(DPT_PREFIX):
        return DPTDepth(name[len(DPT_PREFIX) :])
    table = DEPTH_EXTRACTORS if kind == "depth" else SALIENCY_EXTRACTORS
    if name not in table:
        known = [*sorted(table), "dpt:<model folder or hub id>"] if kind == "depth" else sorted(table)
        raise InputError(f"unknown {kind} extractor {name!r}; known: {known}")
    return table[name]
