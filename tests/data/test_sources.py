"""`read_rows`: every file of a group of rows, each package read once front to back, failures named."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from reliable_ad.data import sources
from reliable_ad.data.sources import Location, MissingFile, UnreadablePackage, read_rows


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """plain/a.png, pack.zip with images/ + products/ of a and b, tail.tar.gz with products/c.png."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.png").write_bytes(b"plain a")
    with zipfile.ZipFile(tmp_path / "pack.zip", "w") as package:
        for name in ("a", "b"):
            package.writestr(f"images/{name}.png", f"image {name}")
            package.writestr(f"products/{name}.png", f"product {name}")
    with tarfile.open(tmp_path / "tail.tar.gz", "w:gz") as package:
        member = tarfile.TarInfo("products/c.png")
        member.size = len(b"product c")
        package.addfile(member, io.BytesIO(b"product c"))
    return tmp_path


def _read(root: Path, rows: list[dict[str, Location]]) -> list[tuple[int, object]]:
    return [(k, data if isinstance(data, dict) else str(data)) for k, data in read_rows(root, rows)]


def test_plain_rows_first_then_package_rows_in_member_order(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[str] = []
    iter_members = sources.iter_members

    def counting(archive: Path, wanted: list[str]):  # type: ignore[no-untyped-def]
        passes.append(archive.name)
        return iter_members(archive, wanted)

    monkeypatch.setattr(sources, "iter_members", counting)
    rows = [
        {"image": Location("pack.zip", "images/b.png"), "product": Location("pack.zip", "products/b.png")},
        {"image": Location("plain/a.png")},
        {"image": Location("pack.zip", "images/a.png"), "product": Location("tail.tar.gz", "products/c.png")},
        {"image": Location("pack.zip", "images/a.png"), "depth": Location("plain/a.png")},  # a member shared
    ]

    assert _read(root, rows) == [
        (1, {"image": b"plain a"}),
        (3, {"image": b"image a", "depth": b"plain a"}),
        (0, {"image": b"image b", "product": b"product b"}),
        (2, {"image": b"image a", "product": b"product c"}),  # complete once tail.tar.gz is read
    ]
    assert passes == ["pack.zip", "tail.tar.gz"]  # each package once


def test_failures_name_the_file_or_the_package_and_the_member(root: Path) -> None:
    (root / "cut.tar.gz").write_bytes((root / "tail.tar.gz").read_bytes()[:30])
    rows = [
        {"image": Location("plain/missing.png")},
        {"image": Location("pack.zip", "images/a.png"), "product": Location("pack.zip", "products/nope.png")},
        {"image": Location("gone.zip", "images/a.png")},
        {"image": Location("cut.tar.gz", "products/c.png")},
        {"image": Location("../outside.png")},
        {"image": Location("pack.zip", "images/b.png")},
    ]

    results = dict(read_rows(root, rows))

    assert (
        isinstance(results[0], MissingFile)
        and str(results[0]) == f"image: plain/missing.png does not exist under {root}"
    )
    assert (
        isinstance(results[1], MissingFile) and str(results[1]) == "member products/nope.png is not in package pack.zip"
    )
    assert (
        str(results[2])
        == f"member images/a.png of package gone.zip not read: package gone.zip does not exist under {root}"
    )
    assert isinstance(results[3], UnreadablePackage)
    assert str(results[3]).startswith(
        "member products/c.png of package cut.tar.gz not read: package cut.tar.gz cannot be read"
    )
    assert "escapes the data root" in str(results[4])
    assert results[5] == {"image": b"image b"}
