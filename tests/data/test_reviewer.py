import collections

import cv2
import numpy as np
import pytest

from reliable_ad.data.reviewer import ReviewerConfig, product_mask, review
from reliable_ad.data.synth.catalog import CATEGORIES
from reliable_ad.data.synth.render import NoRoomForReference, make_product, render
from reliable_ad.labels import RF1M_LABELS

LABELS = list(RF1M_LABELS.values())


def _renders(size: int, count: int, seed: int = 11):
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        product = make_product(rng, f"p{i}", list(CATEGORIES))
        label = LABELS[i % len(LABELS)]
        for _ in range(20):
            try:
                yield label, product, render(product, label, size, rng)
                break
            except NoRoomForReference:
                continue


@pytest.mark.parametrize("size", [64, 128])
def test_reviewer_agrees_with_the_renderer_on_every_class(size: int) -> None:
    agree: dict[str, list[bool]] = collections.defaultdict(list)
    for label, product, rendering in _renders(size, 360 if size == 64 else 120):
        verdict = review(rendering.image, product_mask(rendering.product), product.height_cm)
        agree[label].append(verdict.label == label)
    for label in LABELS:
        assert np.mean(agree[label]) >= 0.97, (label, np.mean(agree[label]))
    assert np.mean([v for values in agree.values() for v in values]) >= 0.99


def _scene_with_product(gap: int = 0, wall=(200, 200, 210), table=(150, 110, 70), product=(30, 60, 170)):
    """A scene drawn here, not by the renderer: wall, table edge at row 40, a box standing on the table."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:40] = wall
    image[40:] = table
    mask = np.zeros((64, 64), bool)
    base = 44 - gap
    mask[base - 20 : base, 24:40] = True
    image[mask] = product
    return image, mask


def test_reviewer_judges_a_scene_it_did_not_render() -> None:
    image, mask = _scene_with_product()
    assert review(image, mask, height_cm=20).label == "available"
    floating, mask = _scene_with_product(gap=10)
    verdict = review(floating, mask, height_cm=20)
    assert verdict.label == "space_mismatch"
    assert verdict.evidence["gap_px"] >= 6


def test_reviewer_sees_a_product_coloured_background() -> None:
    image, mask = _scene_with_product(wall=(35, 65, 175), table=(40, 60, 160))
    assert review(image, mask, height_cm=20).label == "indistinctiveness"


def test_reviewer_sees_grown_parts() -> None:
    image, mask = _scene_with_product()
    image[24:27, 40:50] = (30, 60, 170)  # an arm in the product's colour, outside its mask
    verdict = review(image, mask, height_cm=20)
    assert verdict.label == "shape_hallucination"
    assert verdict.evidence["grown_px"] > 0


def test_reviewer_sees_a_truncated_or_damaged_product_photo() -> None:
    image, mask = _scene_with_product()
    cut = mask.copy()
    cut[:, :30] = False
    cut[20:44, 0:3] = True  # the photo touches the frame
    assert review(image, cut, height_cm=20).label == "unsuitable"
    holed = mask.copy()
    holed[30:33, 30:33] = False
    assert review(image, holed, height_cm=20).evidence["hole_px"] == 9


def _non_scenes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    blotches = np.zeros((64, 64, 3), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        colour = [float(v) for v in rng.integers(0, 256, 3)]
        centre = tuple(int(v) for v in rng.integers(0, 64, 2))
        cv2.circle(blotches, centre, int(rng.integers(6, 20)), colour, -1)
    grey = np.full((64, 64, 3), float(rng.integers(150, 230)))
    return {
        "noise": rng.integers(0, 256, (64, 64, 3)).astype(np.uint8),
        "washed_out_grey": np.clip(grey + rng.normal(0, 2, grey.shape), 0, 255).astype(np.uint8),
        "blotches": cv2.GaussianBlur(blotches, (0, 0), 3).astype(np.uint8),
    }


@pytest.mark.parametrize("seed", range(100))
def test_non_scenes_are_never_available(seed: int) -> None:
    rng = np.random.default_rng(seed)
    product = make_product(rng, "p", list(CATEGORIES))
    rendering = render(product, "available", 64, rng)
    mask = product_mask(rendering.product)
    for kind, image in _non_scenes(rng).items():
        image[mask] = rendering.product[..., :3][mask]
        verdict = review(image, mask, product.height_cm)
        assert verdict.label != "available", (kind, verdict.evidence)


def test_reviewer_rejects_malformed_inputs() -> None:
    image, mask = _scene_with_product()
    with pytest.raises(ValueError, match="RGB"):
        review(image[..., 0], mask, 20)
    with pytest.raises(ValueError, match="differ in size"):
        review(image, mask[:32], 20)
    with pytest.raises(ValueError, match="RGBA"):
        product_mask(image)
    assert review(image, np.zeros_like(mask), 20).label == "unsuitable"


def test_size_is_not_judged_without_a_reference_object() -> None:
    image, mask = _scene_with_product()
    verdict = review(image, mask, height_cm=500, config=ReviewerConfig())
    assert verdict.label == "available"
    assert verdict.evidence["reference"] is None
