from reliable_ad.data.synth.products import held_out_products


def test_held_out_products_are_distinct_products() -> None:
    products = held_out_products(12, 777)
    ids = {p.key.rsplit("-", 1)[0] for p in products}
    assert len(ids) == 12  # one photo per product: paired statistics count independent items


def test_an_offset_continues_the_same_product_set() -> None:
    """Shards and calibration sets take slices of one sequence: products 4..5 are the same whichever way drawn."""
    whole, tail = held_out_products(6, 9), held_out_products(2, 9, offset=4)
    assert [p.key for p in whole[4:]] == [p.key for p in tail]
    assert all((a.rgba == b.rgba).all() for a, b in zip(whole[4:], tail, strict=True))
