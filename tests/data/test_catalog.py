"""A team's catalog as a product source: read and checked whole, drawn by split and seed."""

import json

import numpy as np
import pytest
from PIL import Image

from reliable_ad.data.catalog import CATALOG_FILE, CatalogError, CatalogProducts, hashed_split
from reliable_ad.data.config import CatalogConfig


def test_a_catalog_is_drawn_by_split_and_seed_on_the_generator_canvas(tmp_path, write_catalog) -> None:
    catalog = CatalogProducts.open(CatalogConfig(path=write_catalog(tmp_path / "cat"), size=64))
    assert len(catalog.entries) == 20
    by_split = {s: [e for e in catalog.entries if e.split == s] for s in ("train", "validation", "test")}
    test = catalog.products(len(by_split["test"]), seed=1, split="test")
    assert {p.key for p in test} == {e.product_id for e in by_split["test"]} and all(p.split == "test" for p in test)
    assert all(p.rgba.shape == (64, 64, 4) and p.rgba[..., 3].any() for p in test)
    # the same seed gives the same products; an offset continues the draw; another seed reorders
    again = catalog.products(2, seed=1, split="test", offset=1)
    assert [p.key for p in again] == [p.key for p in test[1:3]]
    assert [p.key for p in catalog.products(len(test), seed=2, split="test")] != [p.key for p in test]
    # without a split every product, each with its own; categories filter
    everything = catalog.products(20, seed=3, split=None)
    assert len({p.key for p in everything}) == 20
    assert all(p.category == "cans" for p in catalog.products(3, seed=3, split=None, categories=["cans"]))
    # people label a catalog's images: no reviewer at hand
    assert all(p.reviewer is None for p in everything)
    with pytest.raises(CatalogError, match=rf"{len(test) + 1} test products asked for .* the catalog has {len(test)}"):
        catalog.products(len(test) + 1, seed=1, split="test")


def test_the_simulated_reviewer_labels_a_catalog_that_has_heights(tmp_path, write_catalog) -> None:
    cfg = CatalogConfig(path=write_catalog(tmp_path / "cat"), reviewer="simulated")
    (product,) = CatalogProducts.open(cfg).products(1, seed=0, split=None)
    assert product.reviewer is not None and product.reviewer(np.zeros((64, 64, 3), np.uint8)) in (
        "available", "unsuitable", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination",
    )  # fmt: skip
    no_heights = write_catalog(tmp_path / "bare", heights=False)
    with pytest.raises(CatalogError, match=rf"{CATALOG_FILE}:1: no 'height_cm': the simulated reviewer"):
        CatalogProducts.open(CatalogConfig(path=no_heights, reviewer="simulated"))


def test_a_product_without_a_split_gets_a_stable_one_from_its_id() -> None:
    splits = [hashed_split(f"p{k}") for k in range(2000)]
    assert splits == [hashed_split(f"p{k}") for k in range(2000)]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert shares["train"] == pytest.approx(0.70, abs=0.04) and shares["test"] == pytest.approx(0.15, abs=0.03)


def test_every_bad_line_and_photo_is_named_at_once(tmp_path, write_catalog) -> None:
    folder = write_catalog(tmp_path / "cat", count=4)
    lines = (folder / CATALOG_FILE).read_text().splitlines()
    Image.new("RGB", (40, 40), (90, 30, 30)).save(folder / "photos" / "dark.jpg")  # no white border, no alpha
    lines += [
        "not json",
        json.dumps({"image": "photos/item 0.png"}),
        json.dumps({"image": "../outside.png", "title": "t"}),
        json.dumps({"image": "photos/missing.png", "title": "t"}),
        json.dumps({"image": "photos/item 1.jpg", "title": "t", "product_id": "item 0"}),
        json.dumps({"image": "photos/item 2.png", "title": "t", "product_id": "x", "height_cm": "tall"}),
        json.dumps({"image": "photos/item 2.png", "title": "t", "product_id": "y", "split": "holdout"}),
        json.dumps({"image": "photos/dark.jpg", "title": "t"}),
    ]
    (folder / CATALOG_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError) as error:
        CatalogProducts.open(CatalogConfig(path=folder))
    message = str(error.value)
    assert message.startswith(f"8 of the products in {folder / CATALOG_FILE} cannot be used")
    for expected in (
        ":5: not a JSON object",
        ":6: field 'title' is missing",
        ":7: path '../outside.png' escapes the data root",
        ":8: image 'photos/missing.png' is not in",
        ":9: product_id 'item 0' is on line 1 too",
        ":10: field 'height_cm' must be a positive number",
        ":11: field 'split' is 'holdout'",
        "dark.jpg: RGB without alpha and without a white background",
    ):
        assert expected in message, expected
    with pytest.raises(CatalogError, match=f"{tmp_path / 'none'}: no {CATALOG_FILE}"):
        CatalogProducts.open(CatalogConfig(path=tmp_path / "none"))
