import numpy as np
import pytest

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.maps import extractor, frequency_tuned_saliency, ground_depth
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.errors import InputError


def test_floating_product_is_as_far_as_the_wall() -> None:
    """The ground-plane cue: a product standing on the table is nearer than one floating in front of the wall."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:40], image[40:] = (200, 200, 210), (150, 110, 70)
    standing, floating = image.copy(), image.copy()
    standing[24:44, 24:40] = (30, 60, 170)
    floating[14:34, 24:40] = (30, 60, 170)
    near, far = ground_depth(standing), ground_depth(floating)
    assert near[30, 30] > far[30, 30]
    assert far[30, 30] == far[5, 5]  # as far as the wall


def test_saliency_highlights_the_product() -> None:
    sample = draw_sample(SynthConfig(), 1)
    saliency = frequency_tuned_saliency(sample.rendering.image)
    mask = sample.rendering.product[..., 3] > 0
    assert saliency.dtype == np.uint8 and saliency.shape == mask.shape
    assert saliency[mask].mean() > saliency[~mask].mean()


def test_extractor_lookup() -> None:
    assert extractor("depth", "ground") is ground_depth
    try:
        extractor("saliency", "u2net")
    except InputError as error:
        assert "u2net" in str(error)
    else:
        raise AssertionError("unknown extractor accepted")


def test_dpt_depth_from_a_model_folder(tiny_dpt) -> None:
    depth_of = extractor("depth", f"dpt:{tiny_dpt}")
    image = draw_sample(SynthConfig(), 2).rendering.image
    depth = depth_of(image)
    assert depth.dtype == np.uint8 and depth.shape == image.shape[:2]
    assert depth.min() == 0 and depth.max() == 255  # scaled per image
    assert np.array_equal(depth, depth_of(image))  # the same map at training and at judge time


def test_dpt_without_a_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dpt:.*no depth model there"):
        extractor("depth", f"dpt:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="dpt:<model folder or hub id>"):
        extractor("depth", "dpt")
