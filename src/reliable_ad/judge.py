"""The judge: RFNet behind one call, used by recurrent generation, RFFT and evaluation.

``RFNetJudge.from_path(folder)``, then ``judge(images, products, captions) -> JudgeOutput(labels, p_available,
logits)``. Generation and training depend on the protocols below (`Judge` for verdicts, `Reward` for RFFT's
differentiable reward), not on this class: a stub, an ensemble or another model judges as well.
Depth and saliency maps are computed here with the extractors named in the model's config, exactly as the
training data's maps were made. Images whose size differs from the model's input size are resized
(bilinear, antialiased); images of the wrong mode are refused. Without ``grad=True`` nothing is tracked; with
it, gradients flow from the logits back into the generated images (the maps are treated as constants).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from reliable_ad.data.hashing import folder_hash
from reliable_ad.data.maps import extractor
from reliable_ad.errors import InputError
from reliable_ad.labels import AVAILABLE
from reliable_ad.models.rfnet import RFNet

ImageBatch = Sequence[NDArray[np.uint8]] | torch.Tensor


class JudgeInputError(InputError):
    """Inputs the judge cannot read faithfully: wrong mode, mismatched counts, missing modality."""


@dataclass
class JudgeOutput:
    labels: list[str]
    p_available: torch.Tensor  # B
    logits: torch.Tensor  # B x classes


class RFNetJudge:
    def __init__(self, model: RFNet, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        if AVAILABLE not in model.config.labels:
            raise JudgeInputError(f"the judge's label set {model.config.labels} lacks '{AVAILABLE}'")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.config = model.config
        self.source: Path | None = None  # the folder it was loaded from, if any
        self._depth = extractor("depth", self.config.depth_extractor) if "depth" in self.config.modalities else None
        self._saliency = (
            extractor("saliency", self.config.saliency_extractor) if "saliency" in self.config.modalities else None
        )

    @property
    def threshold(self) -> float:
        """The judge's own acceptance threshold (tau): calibrated with the model, else 0.5."""
        tau = self.config.acceptance_threshold
        return 0.5 if tau is None else tau

    @classmethod
    def from_path(cls, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 64) -> RFNetJudge:
        judge = cls(RFNet.load(Path(folder), device), device, batch_size)
        judge.source = Path(folder)
        return judge

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    def to(self, device: str | torch.device) -> RFNetJudge:
        """Frozen, in eval mode, on `device` (RFFT moves its reward to the accelerator's device)."""
        self.model.requires_grad_(False).eval().to(device)
        self.device = torch.device(device)
        return self

    def describe(self) -> dict[str, object]:
        """What identifies this judge: its config and, when loaded from a folder, the hash of its files (a
        resume under other weights is refused; a gate can tell whether it is asked to count this judge)."""
        files = {"path": str(self.source), "sha256": folder_hash(self.source)} if self.source else {}
        return {"config": self.config.model_dump(mode="json"), **files}

    def log_p_available(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str], grad: bool = False
    ) -> torch.Tensor:
        """log p(available) per image: the reward RFFT raises."""
        logits = self(images, products, captions, grad=grad).logits
        return logits.log_softmax(-1)[:, self.model.available_index]

    def requires_grad_check(self) -> None:
        """Refuse to be used as a differentiable reward unless a gradient reaches the generated image: logits
        that require grad only through the judge's own weights would leave the generator with no signal."""
        size = self.config.image_size
        probe = torch.rand(1, 3, size, size, device=self.device, requires_grad=True)
        product = np.zeros((size, size, 4), np.uint8)
        product[2:-2, 2:-2, 3] = 255
        reward = self.log_p_available(probe, [product], ["probe"], grad=True)
        (grad,) = torch.autograd.grad(reward.sum(), probe, allow_unused=True) if reward.requires_grad else (None,)
        if grad is None or not bool(grad.abs().sum() > 0):
            raise JudgeInputError("this judge cannot backpropagate into the generated image")

    def __call__(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str], grad: bool = False
    ) -> JudgeOutput:
        count = len(images)
        if not (count == len(products) == len(captions)):
            raise JudgeInputError(f"{count} images, {len(products)} products and {len(captions)} captions differ")
        logits = []
        with torch.set_grad_enabled(grad):
            for start in range(0, count, self.batch_size):
                stop = min(count, start + self.batch_size)
                batch = self._inputs(images[start:stop], products[start:stop], captions[start:stop])
                logits.append(self.model(batch))
        all_logits = torch.cat(logits)
        probabilities = all_logits.softmax(dim=-1)
        names = [self.config.labels[i] for i in probabilities.argmax(dim=-1).tolist()]
        return JudgeOutput(names, probabilities[:, self.model.available_index], all_logits)

    def _inputs(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str]
    ) -> dict[str, object]:
        generated = self._generated_tensor(images)
        size = self.config.image_size
        inputs: dict[str, object] = {"generated": _resize(generated, size)}
        pixels = (generated.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        if "product" in self.config.modalities:
            for i, product in enumerate(products):
                if product.ndim != 3 or product.shape[2] != 4:
                    raise JudgeInputError(f"product {i}: expected RGBA (H x W x 4), got shape {product.shape}")
            inputs["product"] = _resize(_stack(products).to(self.device), size)
        if self._depth is not None:
            inputs["depth"] = _resize(_stack([self._depth(p)[..., None] for p in pixels]).to(self.device), size)
        if self._saliency is not None:
            inputs["saliency"] = _resize(_stack([self._saliency(p)[..., None] for p in pixels]).to(self.device), size)
        if "caption" in self.config.modalities:
            inputs["caption"] = list(captions)
        return inputs

    def _generated_tensor(self, images: ImageBatch) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise JudgeInputError(
                    f"generated images must be a float B x 3 x H x W tensor in [0, 1], got {images.dtype} "
                    f"{tuple(images.shape)}"
                )
            if images.numel() and (images.detach().min() < 0 or images.detach().max() > 1):
                raise JudgeInputError("generated image tensors must hold values in [0, 1] (0-255 images: pass uint8)")
            return images.to(self.device)
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3:
                raise JudgeInputError(f"generated image {i}: expected RGB (H x W x 3), got shape {image.shape}")
        return _stack(list(images)).to(self.device)


def _stack(arrays: Sequence[NDArray[np.uint8]]) -> torch.Tensor:
    """uint8 arrays to a float batch in [0, 1]; any other dtype is refused (a float image in [0, 1] divided
    by 255 would be read as black)."""
    dtypes = {str(a.dtype) for a in arrays}
    if dtypes - {"uint8"}:
        raise JudgeInputError(f"images must be uint8 arrays (0-255), got {sorted(dtypes)}; pass floats as a tensor")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise JudgeInputError(f"images in one batch have different shapes: {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class Judge(Protocol):
    """What generation needs of a judge: verdicts on generated images, its labels, and its own acceptance
    threshold (tau)."""

    @property
    def labels(self) -> list[str]: ...

    @property
    def threshold(self) -> float: ...

    def __call__(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str]
    ) -> JudgeOutput: ...


class Reward(Protocol):
    """What RFFT needs of a judge: a differentiable log p(available), on a device, identifiable in a fingerprint."""

    @property
    def labels(self) -> list[str]: ...

    @property
    def threshold(self) -> float: ...

    def to(self, device: str | torch.device) -> Reward: ...

    def describe(self) -> dict[str, object]: ...

    def requires_grad_check(self) -> None: ...

    def log_p_available(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str], grad: bool = False
    ) -> torch.Tensor: ...


Combine = Literal["mean", "min", "mean_minus_std"]


class JudgeEnsemble:
    """Several judges (other seeds or data halves) as one conservative reward (Coste et al. 2023): an image
    that one judge doubts is not rewarded as if all agreed, so a flaw of one judge is harder to exploit."""

    def __init__(self, judges: Sequence[RFNetJudge], combine: Combine = "min") -> None:
        if len(judges) < 2:
            raise JudgeInputError(f"an ensemble needs at least 2 judges, got {len(judges)}")
        label_sets = {tuple(j.labels) for j in judges}
        if len(label_sets) > 1:
            raise JudgeInputError(f"the ensemble's judges have different label sets: {sorted(label_sets)}")
        self.judges = list(judges)
        self.combine = combine

    @property
    def labels(self) -> list[str]:
        return self.judges[0].labels

    @property
    def threshold(self) -> float:
        """The first judge's tau (the combined score is at most as sure as it)."""
        return self.judges[0].threshold

    def to(self, device: str | torch.device) -> JudgeEnsemble:
        for judge in self.judges:
            judge.to(device)
        return self

    def describe(self) -> dict[str, object]:
        return {"combine": self.combine, "judges": [j.describe() for j in self.judges]}

    def requires_grad_check(self) -> None:
        for judge in self.judges:
            judge.requires_grad_check()

    def log_p_available(
        self, images: ImageBatch, products: Sequence[NDArray[np.uint8]], captions: Sequence[str], grad: bool = False
    ) -> torch.Tensor:
        scores = torch.stack([j.log_p_available(images, products, captions, grad=grad) for j in self.judges])
        if self.combine == "min":
            return scores.min(dim=0).values
        if self.combine == "mean":
            return scores.mean(dim=0)
        return scores.mean(dim=0) - scores.std(dim=0)
