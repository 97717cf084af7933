import numpy as np

from reliable_ad.data.maps import extractor, frequency_tuned_saliency, ground_depth
from reliable_ad.data.synth.world import SynthConfig, draw_sample


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
    except KeyError as error:
        assert "u2net" in str(error)
    else:
        raise AssertionError("unknown extractor accepted")
