import pytest

from reliable_ad.labels import LabelSet, parse_label


def test_parse_label_ids_and_names() -> None:
    assert parse_label("1") == (1, "available")
    assert parse_label(" Shape Hallucination ") == (6, "shape_hallucination")
    assert parse_label("size-mismatch") == (4, "size_mismatch")


@pytest.mark.parametrize("token", ["7", "0", "good", ""])
def test_parse_label_rejects(token: str) -> None:
    with pytest.raises(ValueError):
        parse_label(token)


def test_label_set_without_unsuitable() -> None:
    five = LabelSet(("available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"))
    assert len(five) == 5 and "unsuitable" not in five
    assert five.ids == (1, 3, 4, 5, 6)
    assert five.index("space_mismatch") == 1
    with pytest.raises(ValueError, match="unknown"):
        LabelSet(("available", "blurry"))
