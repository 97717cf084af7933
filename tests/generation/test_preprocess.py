"""The official sampler's preprocessing on a synthetic product cut out of white; expected values are computed
from the drawing, not by the functions under test."""

import numpy as np
import pytest

from reliable_ad.data.cutout import centre_zoom, ensure_alpha
from reliable_ad.generation.preprocess import control_inputs

SIZE = 128  # the mask kernel is round(20 * 128 / 512) = 5 px: the background grows 5 // 2 = 2 px each way
TOP, BOTTOM, LEFT, RIGHT = 30, 90, 40, 80  # the product: rows 30..89, columns 40..79


def _product_on_white() -> np.ndarray:
    """A red box over a blue box (an edge inside the product), on pure white."""
    rgb = np.full((SIZE, SIZE, 3), 255, np.uint8)
    rgb[TOP:60, LEFT:RIGHT] = (200, 30, 30)
    rgb[60:BOTTOM, LEFT:RIGHT] = (30, 30, 200)
    return rgb


def _box(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    inside = np.zeros((SIZE, SIZE), bool)
    inside[top:bottom, left:right] = True
    return inside


def test_inpaint_mask_covers_the_background_and_grows_into_the_product_edge() -> None:
    mask = control_inputs(ensure_alpha(_product_on_white())).inpaint_mask
    grow = 5 // 2
    kept = _box(TOP + grow, BOTTOM - grow, LEFT + grow, RIGHT - grow)  # the product less the dilation band
    assert (mask[kept] == 0).all() and (mask[~kept] == 255).all()


def test_inpaint_mask_dilation_scales_with_the_canvas() -> None:
    """At 512 px the official 20 x 20 kernel: the band is about 10 px wide (9 or 10: the kernel is even)."""
    rgb = np.full((512, 512, 3), 255, np.uint8)
    rgb[100:400, 150:350] = (90, 140, 60)
    mask = control_inputs(ensure_alpha(rgb)).inpaint_mask
    rows = np.nonzero(mask[:, 250] == 0)[0]
    assert 100 + 9 <= rows.min() <= 100 + 10 and 400 - 11 <= rows.max() <= 400 - 10


def test_canny_edges_follow_the_product_and_not_the_background() -> None:
    rgba = ensure_alpha(_product_on_white())
    rgba[::4, :, :3] = 0  # stripes under the transparent background: strong edges that must not count
    rgba[TOP:BOTTOM, LEFT:RIGHT, :3] = _product_on_white()[TOP:BOTTOM, LEFT:RIGHT]
    edges = control_inputs(rgba).control_image
    assert edges.shape == (SIZE, SIZE, 3) and (edges[..., 0] == edges[..., 2]).all()
    on = edges[..., 0] > 0
    assert on[59:61, LEFT + 5 : RIGHT - 5].any(axis=0).all()  # the colour change inside the product
    assert on[TOP - 1 : TOP + 1, LEFT + 5 : RIGHT - 5].any(axis=0).all()  # its outline
    # nothing beyond the outline: Canny may mark the pixel just outside it (as the official sampler's canny
    # does, alpha < 128 there), but the background's own content is blacked out before edge detection
    near = _box(TOP - 1, BOTTOM + 1, LEFT - 1, RIGHT + 1)
    assert not on[~near].any()


@pytest.mark.parametrize(("height", "width", "scale"), [(60, 40, 0.5), (20, 50, 0.7)])
def test_centre_zoom_scales_the_long_side_to_image_scale_and_centres(height: int, width: int, scale: float) -> None:
    rgb = np.full((200, 200, 3), 255, np.uint8)
    rgb[7 : 7 + height, 13 : 13 + width] = (40, 160, 90)  # off-centre in the photo
    canvas = centre_zoom(ensure_alpha(rgb), (SIZE, SIZE), scale)
    ys, xs = np.nonzero(canvas[..., 3] >= 128)
    got_h, got_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    long_side = SIZE * scale
    factor = long_side / max(height, width)
    assert abs(max(got_h, got_w) - long_side) <= 1
    assert abs(got_h - height * factor) <= 1 and abs(got_w - width * factor) <= 1
    assert abs((ys.min() + ys.max()) / 2 - (SIZE - 1) / 2) <= 1 and abs((xs.min() + xs.max()) / 2 - (SIZE - 1) / 2) <= 1
