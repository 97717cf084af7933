"""RGB product photos on white turned into RGBA cut-outs; expected values come from the drawing."""

import io

import numpy as np
import pytest
from PIL import Image

from reliable_ad.data.cutout import ProductImageError, ensure_alpha


def _two_boxes_on(background: int) -> tuple[np.ndarray, np.ndarray]:
    """A red box over a blue box (an edge inside the product) on a grey level, and where the product is."""
    rgb = np.full((128, 128, 3), background, np.uint8)
    rgb[30:60, 40:80] = (200, 30, 30)
    rgb[60:90, 40:80] = (30, 30, 200)
    product = np.zeros((128, 128), bool)
    product[30:90, 40:80] = True
    return rgb, product


def _opaque_box(rgba: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(rgba[..., 3] >= 128)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_alpha_is_transparent_on_white_and_opaque_on_the_product() -> None:
    rgb, product = _two_boxes_on(255)
    rgba = ensure_alpha(rgb)
    assert (rgba[..., 3][product] == 255).all() and (rgba[..., 3][~product] == 0).all()
    assert np.array_equal(rgba[..., :3], rgb)


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_ringing_on_white_is_background(quality: int) -> None:
    """A 120 x 116 box saved as JPEG: its ringing and colour bleed on the white stayed opaque (145 x 129)."""
    rgb = np.full((256, 256, 3), 255, np.uint8)
    rgb[70:186, 60:180] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    width, height = _opaque_box(ensure_alpha(np.asarray(Image.open(buffer).convert("RGB"))))
    assert 120 <= width <= 121 and 116 <= height <= 118


def test_off_white_background_is_background_and_near_white_inside_the_product_stays() -> None:
    rgb, _ = _two_boxes_on(250)  # an off-white studio background
    rgb[40:50, 50:60] = 240  # a light label inside the product, not connected to the background
    rgba = ensure_alpha(rgb)
    assert _opaque_box(rgba) == (40, 60) and (rgba[40:50, 50:60, 3] == 255).all()


def test_a_background_beyond_the_tolerance_says_what_would_do() -> None:
    grey = np.full((64, 64, 3), 200, np.uint8)
    grey[20:40, 20:40] = (30, 30, 200)
    message = "p.jpg: RGB without alpha and without a white background: no border pixel is within 32 of white"
    with pytest.raises(ProductImageError, match=message) as refused:
        ensure_alpha(grey, "p.jpg", setting="--white_tolerance")
    assert str(refused.value).endswith(
        "give an RGBA cut-out, or raise --white_tolerance to 55 if that is its background"
    )
