"""The RF1M reader: happy paths on RF1M-synth (plain files and zip packages) and one test per bad input."""

import json
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, SynthConfig
from reliable_ad.data.rf1m import PACKAGE_STOPS, BadLineError, DatasetError, hash_share, import_dataset
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.labels import RF1M_LABELS

N = 24


@pytest.fixture(scope="module")
def plain_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RF1M-synth with plain image files; shared, so tests copy it before changing it."""
    root = tmp_path_factory.mktemp("rf1m") / "plain"
    write_synth(SynthConfig(n=N), root)
    return root


@pytest.fixture(scope="module")
def zip_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rf1m") / "zip"
    write_synth(SynthConfig(n=N), root, archives=2)
    return root


@pytest.fixture
def root(plain_root: Path, tmp_path: Path) -> Path:
    """A private copy of the plain dataset."""
    return Path(shutil.copytree(plain_root, tmp_path / "ds"))


def _label_lines(root: Path) -> list[str]:
    return (root / layout.LABEL_FILE).read_text().splitlines()


def _append_line(root: Path, line: str) -> int:
    """Append a line to label.txt; return its line number."""
    with (root / layout.LABEL_FILE).open("a") as handle:
        handle.write(line + "\n")
    return len(_label_lines(root))


def _metadata(root: Path) -> dict[str, dict]:
    lines = (root / layout.METADATA_FILE).read_text().splitlines()
    return {entry["image"]: entry for entry in map(json.loads, lines)}


def _write_metadata(root: Path, entries: list[dict]) -> None:
    (root / layout.METADATA_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))


def _assert_names(error: pytest.ExceptionInfo[BadLineError], line: int, text: str, reason: str) -> None:
    """The error names label.txt, the line number, the line's text and the reason."""
    message = str(error.value)
    assert error.value.line == line
    assert f"{layout.LABEL_FILE}:{line}:" in message
    assert repr(text) in message
    assert reason in message


def test_import_plain_images_matches_label_file_and_metadata(root: Path) -> None:
    summary = import_dataset(root, ImportConfig())

    assert (summary.rows_in, summary.rows_accepted, summary.rows_quarantined) == (N, N, 0)
    table = pq.read_table(root / layout.MANIFEST_FILE)
    assert table.schema.equals(layout.manifest_schema())
    rows = table.to_pylist()
    metadata = _metadata(root)
    for number, (line, row) in enumerate(zip(_label_lines(root), rows, strict=True), start=1):
        name, label_id = line.split("\t")
        meta = metadata[name]
        assert row["source_line"] == number
        assert row["id"] == name.removesuffix(".png")
        assert (row["label_id"], row["label"]) == (int(label_id), RF1M_LABELS[int(label_id)])
        assert (row["prompt"], row["title"], row["product_id"]) == (meta["prompt"], meta["title"], meta["product_id"])
        assert row["split"] == meta["split"]
        assert (row["image"], row["image_member"]) == (f"images/{name}", None)
        assert (row["product"], row["product_member"]) == (f"products/{name}", None)
        assert (row["depth"], row["depth_member"]) == (f"depth/{name}", None)
        assert (row["saliency"], row["saliency_member"]) == (f"saliency/{name}", None)
        assert (root / row["image"]).is_file() and (root / row["product"]).is_file()
    assert summary.labels == dict(sorted(Counter(r["label"] for r in rows).items()))
    assert not (root / layout.REJECTS_FILE).exists()


def test_import_zip_packages_reads_members_in_place(zip_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    summary = import_dataset(zip_root, ImportConfig(), out)

    assert summary.rows_accepted == N
    rows = pq.read_table(out).to_pylist()
    for row, line in zip(rows, _label_lines(zip_root), strict=True):
        name = line.split("\t")[0]
        assert row["image"] in {"samples_00.zip", "samples_01.zip"}
        with zipfile.ZipFile(zip_root / row["image"]) as package:
            for kind, folder in layout.KIND_DIRS.items():
                assert row[kind] == row["image"]  # a sample's files share its package
                assert row[f"{kind}_member"] == f"{folder}/{name}" in package.namelist()
    assert [r["label_id"] for r in rows] == [int(line.split("\t")[1]) for line in _label_lines(zip_root)]
    assert sorted(p.name for p in zip_root.iterdir() if p.is_dir()) == []  # nothing unpacked


def _repack(package: Path, rename: Callable[[str], str | None]) -> None:
    """Rewrite a zip package with each member renamed by `rename` (None: left out)."""
    with zipfile.ZipFile(package) as old:
        members = {name: old.read(name) for name in old.namelist()}
    with zipfile.ZipFile(package, "w") as new:
        for name, data in members.items():
            if (renamed := rename(name)) is not None:
                new.writestr(renamed, data)


def test_product_member_missing_from_its_package_is_rejected_naming_it(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    lines = _label_lines(root)
    name = lines[2].split("\t")[0]
    _repack(root / "samples_00.zip", lambda member: None if member == f"products/{name}" else member)

    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(
        error, 3, lines[2], f"product image missing: products/{name} is neither a file nor a member of any of the 2"
    )

    summary = import_dataset(root, ImportConfig(quarantine=True))
    assert (summary.rows_accepted, summary.rejected) == (N - 1, {"product": 1})
    [reject] = [json.loads(line) for line in (root / layout.REJECTS_FILE).read_text().splitlines()]
    assert reject["line"] == 3 and f"products/{name}" in reject["reason"]


def test_folders_come_before_packages_and_maps_stay_optional(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    names = [line.split("\t")[0] for line in _label_lines(root)]
    (root / layout.PRODUCTS_DIR).mkdir()
    with zipfile.ZipFile(root / "samples_00.zip") as package:
        (root / layout.PRODUCTS_DIR / names[0]).write_bytes(package.read(f"products/{names[0]}"))
    _repack(root / "samples_00.zip", lambda member: None if member == f"depth/{names[1]}" else member)

    import_dataset(root, ImportConfig())

    rows = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    assert (rows[0]["product"], rows[0]["product_member"]) == (f"products/{names[0]}", None)
    assert (rows[1]["depth"], rows[1]["depth_member"]) == (None, None)
    assert (rows[1]["saliency"], rows[1]["saliency_member"]) == ("samples_00.zip", f"saliency/{names[1]}")


def test_members_under_a_wrapping_folder_and_no_product_taken_for_an_image(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    names = [line.split("\t")[0] for line in _label_lines(root)]
    _repack(root / "samples_00.zip", lambda member: f"part_00/{member}")
    _repack(root / "samples_01.zip", lambda member: None if member == f"images/{names[-1]}" else member)

    with pytest.raises(BadLineError) as error:  # products/<name> is in the package, but it is no image
        import_dataset(root, ImportConfig())
    _assert_names(error, N, _label_lines(root)[-1], f"image {names[-1]!r} not found")

    import_dataset(root, ImportConfig(quarantine=True))
    first = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()[0]
    assert (first["image"], first["image_member"]) == ("samples_00.zip", f"part_00/images/{names[0]}")
    assert (first["product"], first["product_member"]) == ("samples_00.zip", f"part_00/products/{names[0]}")


def test_images_in_a_tar_package_with_products_and_maps_in_folders(plain_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(plain_root, tmp_path / "ds"))
    with tarfile.open(root / "images.tar.gz", "w:gz") as package:
        package.add(root / layout.IMAGES_DIR, arcname=layout.IMAGES_DIR)
    shutil.rmtree(root / layout.IMAGES_DIR)

    import_dataset(root, ImportConfig())

    for row, line in zip(pq.read_table(root / layout.MANIFEST_FILE).to_pylist(), _label_lines(root), strict=True):
        name = line.split("\t")[0]
        assert (row["image"], row["image_member"]) == ("images.tar.gz", f"images/{name}")
        assert (row["product"], row["product_member"]) == (f"products/{name}", None)
        assert (row["depth"], row["depth_member"]) == (f"depth/{name}", None)


def test_unparseable_line_stops_the_import(root: Path) -> None:
    line = _append_line(root, "no separator on this line")
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, "no separator on this line", "expected 2 fields")
    assert not (root / layout.MANIFEST_FILE).exists()


def test_unknown_label(root: Path) -> None:
    line = _append_line(root, "fresh.png\t9")
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, "fresh.png\t9", "label id 9 is not one of")


def test_duplicate_image_names_both_lines(root: Path) -> None:
    third = _label_lines(root)[2]
    line = _append_line(root, third)
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, third, "duplicate image id")
    assert "(first at line 3)" in str(error.value)


def test_image_named_in_label_file_but_missing(root: Path) -> None:
    lines = _label_lines(root)
    missing = lines[4].split("\t")[0]
    (root / layout.IMAGES_DIR / missing).unlink()
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, 5, lines[4], f"image {missing!r} not found")


def test_image_missing_from_packages(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    line = _append_line(root, "ghost.png\t1")
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, "ghost.png\t1", "neither in images/ nor in any of the 2 package(s)")


def test_product_png_missing(root: Path) -> None:
    lines = _label_lines(root)
    (root / layout.PRODUCTS_DIR / lines[1].split("\t")[0]).unlink()
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, 2, lines[1], "product image missing")


def test_metadata_missing_for_an_image(root: Path) -> None:
    lines = _label_lines(root)
    entries = list(_metadata(root).values())
    _write_metadata(root, entries[:6] + entries[7:])
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, 7, lines[6], "no entry for this image in metadata.jsonl")
    assert import_dataset(root, ImportConfig(require_metadata=False, quarantine=True)).rows_accepted == N


def test_malformed_metadata_line_names_its_line(root: Path) -> None:
    with (root / layout.METADATA_FILE).open("a") as handle:
        handle.write('{"image": "x.png", "product_id": 17}\n')
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    assert f"{layout.METADATA_FILE}:{N + 1}:" in str(error.value)
    assert "field 'product_id' must be a string" in str(error.value)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("../outside.png", "escapes the data root"), ("/etc/passwd", "is absolute"), ("C:\\x.png", "is absolute")],
)
def test_unsafe_image_names(root: Path, name: str, reason: str) -> None:
    line = _append_line(root, f"{name}\t1")
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, f"{name}\t1", reason)


def test_empty_name(root: Path) -> None:
    line = _append_line(root, "\t1")
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, line, "\t1", "empty image name")


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_empty_package_is_an_error_naming_it(zip_root: Path, tmp_path: Path, suffix: str) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    package = root / f"images_99{suffix}"
    if suffix == ".zip":
        zipfile.ZipFile(package, "w").close()
    else:
        tarfile.open(package, "w:gz").close()
    with pytest.raises(DatasetError, match=f"images_99{suffix}.*no members"):
        import_dataset(root, ImportConfig())


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("images_99.zip", b"", "not a readable zip package (BadZipFile: File is not a zip file)"),
        ("images_99.tar.gz", b"a text file", "not a readable tar package (ReadError: "),
    ],
)
@pytest.mark.parametrize("quarantine", ["--quarantine", "--no-quarantine"])
def test_a_broken_package_stops_the_import_naming_it(
    zip_root: Path, tmp_path: Path, name: str, content: bytes, reason: str, quarantine: str
) -> None:
    """Its rows cannot be told from the others: quarantine, which sets aside bad lines, does not cover it."""
    from typer.testing import CliRunner

    from reliable_ad.cli import app

    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    (root / name).write_bytes(content)
    result = CliRunner().invoke(app, ["data", "import", str(root), quarantine])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"error: {root / name}: {reason}")
    assert line.endswith(f"; {PACKAGE_STOPS}")
    assert "--quarantine sets aside bad label lines, not packages" in PACKAGE_STOPS
    assert not (root / layout.MANIFEST_FILE).exists()


def test_quarantine_keeps_every_row_accounted_for(root: Path) -> None:
    lines = _label_lines(root)
    bad = ["broken line", "fresh.png\tgreat", lines[0], "../up.png\t2", "ghost.png\t3"]
    for text in bad:
        _append_line(root, text)
    (root / layout.LABEL_FILE).write_text((root / layout.LABEL_FILE).read_text() + "\n\n")  # blank lines: no rows

    summary = import_dataset(root, ImportConfig(quarantine=True))

    assert summary.rows_in == N + len(bad) == summary.rows_accepted + summary.rows_quarantined
    assert (summary.rows_accepted, summary.blank_lines) == (N, 2)
    rejects = [json.loads(r) for r in (root / layout.REJECTS_FILE).read_text().splitlines()]
    assert [r["line"] for r in rejects] == list(range(N + 1, N + len(bad) + 1))
    assert [r["text"] for r in rejects] == bad
    assert all(r["file"] == layout.LABEL_FILE and r["reason"] for r in rejects)
    assert summary.rejected == {"duplicate": 1, "format": 1, "image": 1, "label": 1, "name": 1}
    assert summary.quarantined == [f"label.txt line {r['line']}: {r['reason']}" for r in rejects]  # printed too
    assert pq.read_metadata(root / layout.MANIFEST_FILE).num_rows == N


def test_failed_import_keeps_the_existing_manifest(root: Path) -> None:
    import_dataset(root, ImportConfig())
    before = (root / layout.MANIFEST_FILE).read_bytes()
    _append_line(root, "broken")
    with pytest.raises(BadLineError):
        import_dataset(root, ImportConfig())
    assert (root / layout.MANIFEST_FILE).read_bytes() == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_split_by_category_and_product_hash_without_metadata_split(root: Path) -> None:
    entries = list(_metadata(root).values())
    _write_metadata(root, [{k: v for k, v in e.items() if k != "split"} for e in entries])
    cfg = ImportConfig(test_categories=["speaker", "mug"], val_fraction=0.5, split_seed=3)

    import_dataset(root, cfg)
    rows = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    assert {r["split"] for r in rows} <= {"train", "val", "test"}

    for row in rows:
        if row["category"] in cfg.test_categories:
            assert row["split"] == "test"
        else:
            share = hash_share(pa.array([row["product_id"]]), cfg.split_seed)[0]
            assert row["split"] == ("val" if share < cfg.val_fraction else "train")
    by_product: dict[str, set[str]] = {}
    for row in rows:
        by_product.setdefault(row["product_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_product.values())


def test_unknown_metadata_split_is_rejected(root: Path) -> None:
    entries = list(_metadata(root).values())
    entries[3]["split"] = "holdout"
    _write_metadata(root, entries)
    with pytest.raises(BadLineError) as error:
        import_dataset(root, ImportConfig())
    _assert_names(error, 4, _label_lines(root)[3], "metadata split 'holdout' is not one of train, val, test")


def test_comma_separator_class_names_crlf_and_header(root: Path) -> None:
    lines = [line.split("\t") for line in _label_lines(root)]
    text = "image,label\r\n" + "".join(f"{n},{RF1M_LABELS[int(i)].upper()}\r\n" for n, i in lines)
    (root / layout.LABEL_FILE).write_text(text)

    summary = import_dataset(root, ImportConfig(separator=",", header=True))

    assert summary.rows_accepted == N
    rows = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    assert [r["label_id"] for r in rows] == [int(i) for _, i in lines]
    assert [r["source_line"] for r in rows] == list(range(2, N + 2))


def test_products_without_metadata_fall_back_to_the_image_stem(root: Path) -> None:
    (root / layout.METADATA_FILE).unlink()
    with pytest.raises(DatasetError, match=r"metadata\.jsonl: metadata file not found"):
        import_dataset(root, ImportConfig())
    import_dataset(root, ImportConfig(require_metadata=False))
    rows = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    assert [r["product_id"] for r in rows] == [r["id"] for r in rows]
    assert {r["prompt"] for r in rows} == {None}


def test_hash_share_is_fnv1a_with_a_final_mix_and_spreads_evenly() -> None:
    def reference(text: str, seed: int) -> float:
        h = 0xCBF29CE484222325
        for byte in f"{text}\x1f{seed}".encode():
            h = ((h ^ byte) * 0x100000001B3) % 2**64
        for factor in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            h ^= h >> 33
            h = (h * factor) % 2**64
        h ^= h >> 33
        return (h >> 11) / 2**53

    texts = ["p-1", "p-2", "ünïcödé", "", "x" * 300]
    assert np.allclose(hash_share(pa.array(["skip", *texts]).slice(1), 5), [reference(t, 5) for t in texts])
    shares = hash_share(pa.array([f"p{i}" for i in range(20_000)]), 0)
    assert abs((shares < 0.1).mean() - 0.1) < 0.01
    assert not np.allclose(shares, hash_share(pa.array([f"p{i}" for i in range(20_000)]), 1))


def test_config_rejects_a_line_break_separator() -> None:
    with pytest.raises(ValueError, match="line break"):
        ImportConfig(separator="\n")
