import numpy as np
import pytest

from reliable_ad.data.synth.catalog import CATEGORIES, size_class
from reliable_ad.data.synth.render import make_product, render


def _product(seed: int = 0):
    return make_product(np.random.default_rng(seed), "p", list(CATEGORIES))


@pytest.mark.parametrize("size", [32, 64, 256, 512])
def test_render_sizes_and_product_paste(size: int) -> None:
    product = _product()
    rendering = render(product, "available", size, np.random.default_rng(1))
    assert rendering.image.shape == (size, size, 3)
    assert rendering.product.shape == (size, size, 4)
    mask = rendering.product[..., 3] == 255
    assert mask.any()
    # the product photo is pasted unchanged into the scene
    assert np.array_equal(rendering.image[mask], rendering.product[..., :3][mask])


def test_render_is_deterministic_by_seed() -> None:
    product = _product(3)
    a = render(product, "space_mismatch", 64, np.random.default_rng(5))
    b = render(product, "space_mismatch", 64, np.random.default_rng(5))
    c = render(product, "space_mismatch", 64, np.random.default_rng(6))
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_floating_gap_grows_with_difficulty() -> None:
    product = _product(4)
    gaps = [
        render(product, "space_mismatch", 64, np.random.default_rng(k), difficulty=d).params["gap_px"]
        for d in (0.0, 1.0)
        for k in range(20)
    ]
    assert np.mean(gaps[20:]) > np.mean(gaps[:20])


def test_title_and_size_class() -> None:
    product = _product(2)
    assert product.title.endswith(f"{product.height_cm:.0f} cm")
    assert size_class(5) == "small" and size_class(20) == "medium" and size_class(40) == "large"


def test_difficulty_out_of_range() -> None:
    with pytest.raises(ValueError, match="difficulty"):
        render(_product(), "available", 64, np.random.default_rng(0), difficulty=1.5)
