import collections

import pytest
from pydantic import ValidationError

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.labels import RF1M_LABELS


def test_holdout_by_category_and_no_product_across_splits() -> None:
    cfg = SynthConfig(n=400, test_categories=["lamp", "jar"])
    splits_of = collections.defaultdict(set)
    for i in range(cfg.n):
        sample = draw_sample(cfg, i)
        splits_of[sample.product.product_id].add(sample.split)
        assert (sample.split == "test") == (sample.product.category in {"lamp", "jar"})
    assert all(len(s) == 1 for s in splits_of.values())
    assert {"train", "val", "test"} <= {s for v in splits_of.values() for s in v}


def test_class_mix_is_followed() -> None:
    cfg = SynthConfig(n=600, class_mix={"available": 3, "size_mismatch": 1})
    counts = collections.Counter(draw_sample(cfg, i).label for i in range(cfg.n))
    assert set(counts) == {"available", "size_mismatch"}
    assert 0.68 < counts["available"] / cfg.n < 0.82


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("class_mix", {"avail": 1.0}, "unknown labels"),
        ("categories", ["spaceship"], "unknown category"),
        ("size", 60, "multiple of 8"),
        ("size", 1024, "less than or equal"),
        ("difficulty", -0.1, "greater than or equal"),
    ],
)
def test_bad_synth_config(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SynthConfig(**{field: value})


def test_size_mismatch_finds_room_for_a_reference_in_a_small_frame() -> None:
    # at 32 px this product leaves no room beside it for a reference object at its drawn size (it used to fail)
    cfg = SynthConfig(n=200, size=32, seed=123, class_mix={name: 1.0 for name in RF1M_LABELS.values()})
    sample = draw_sample(cfg, 174)
    assert sample.label == "size_mismatch"
    assert sample.rendering.params["reference"] is not None
