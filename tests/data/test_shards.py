import io
import json
import shutil
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, PrepareConfig, ValidationConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.shard_format import INDEX_FILE
from reliable_ad.data.shards import PrepareError, png_for, prepare_shards
from reliable_ad.data.sources import MissingFile
from reliable_ad.data.validate import validate_dataset

SMALL = PrepareConfig(samples_per_shard=10, row_group_rows=4)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(root, copy)
    return copy


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_rows_per_split_and_shard_layout(synth_manifest_root: Path, tmp_path: Path) -> None:
    manifest = pq.read_table(synth_manifest_root / layout.MANIFEST_FILE).to_pylist()
    summary = prepare_shards(synth_manifest_root, synth_manifest_root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    expected = Counter(row["split"] for row in manifest)
    for split in layout.SPLITS:
        part = index["splits"][split]
        assert part["rows"] == expected[split] == summary.rows_written[split]
        assert part["labels"] == dict(Counter(r["label"] for r in manifest if r["split"] == split))
        for shard in part["shards"]:
            metadata = pq.ParquetFile(tmp_path / "out" / shard["file"]).metadata
            assert shard["rows"] == metadata.num_rows <= 10
            assert shard["row_groups"] == [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)]
            assert max(shard["row_groups"]) <= 4
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted([INDEX_FILE] + [s["file"] for p in index["splits"].values() for s in p["shards"]])
    (source,) = index["manifests"]
    assert source["rows"] == len(manifest) and len(source["sha256"]) == 64


def _members(root: Path) -> dict[str, bytes]:
    members = {}
    for archive in sorted(root.glob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            members.update({name: zf.read(name) for name in zf.namelist()})
    return members


def test_zip_packages_store_the_original_bytes(synth_zip_manifest_root: Path, tmp_path: Path) -> None:
    root = synth_zip_manifest_root
    prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)
    stored = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("*.parquet"))).to_pylist()
    members = _members(root)
    assert len(stored) == len(members) // 4 == 32
    for row in stored:
        for kind, folder in layout.KIND_DIRS.items():
            assert row[kind] == members[f"{folder}/{row['id']}.png"]


def test_two_runs_give_identical_output(synth_zip_manifest_root: Path, tmp_path: Path) -> None:
    root = synth_zip_manifest_root
    for name in ("a", "b"):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / name, SMALL)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_missing_file_names_it_and_keeps_the_previous_output(synth_manifest_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_manifest_root, tmp_path)
    out = tmp_path / "out"
    prepare_shards(root, root / layout.MANIFEST_FILE, out, SMALL)
    before = _tree(out)
    victim = sorted((root / layout.PRODUCTS_DIR).iterdir())[5]
    victim.unlink()
    with pytest.raises(MissingFile, match=rf"row 5 \(id {victim.stem}, label.txt line 6\).*products/{victim.name}"):
        prepare_shards(root, root / layout.MANIFEST_FILE, out, SMALL)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out"]  # no partial folder left behind


@pytest.mark.parametrize("kind", ["image", "product", "saliency"])
def test_missing_package_member_names_the_row_package_and_member(
    synth_zip_manifest_root: Path, tmp_path: Path, kind: str
) -> None:
    root = _copy(synth_zip_manifest_root, tmp_path)
    table = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    table[3][f"{kind}_member"] = f"{kind}/nope.png"
    pq.write_table(pa.Table.from_pylist(table, schema=layout.manifest_schema()), root / layout.MANIFEST_FILE)
    with pytest.raises(
        MissingFile,
        match=rf"row 3 \(id {table[3]['id']}, .*\): member {kind}/nope.png is not in package samples_00.zip",
    ):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_corrupt_product_member_names_the_row_package_and_member(synth_zip_manifest_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_zip_manifest_root, tmp_path)
    row = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()[30]
    package = root / row["product"]
    with zipfile.ZipFile(package) as old:
        members = {name: old.read(name) for name in old.namelist()}
    members[row["product_member"]] = b"not a png"
    with zipfile.ZipFile(package, "w") as new:
        for name, data in members.items():
            new.writestr(name, data)
    where = rf"row 30 \(id {row['id']}, label.txt line 31\): {row['product']}:{row['product_member']}"
    with pytest.raises(ValueError, match=rf"{where}: cannot read image header"):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)


@pytest.fixture
def oversized_root(synth_manifest_root: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the synth folder where one product image is 80x80 instead of 64x64."""
    root = _copy(synth_manifest_root, tmp_path)
    victim = sorted((root / layout.PRODUCTS_DIR).iterdir())[2]
    with Image.open(victim) as image:
        image.resize((80, 80)).save(victim)
    return root, victim.stem


def test_wrong_size_is_refused(oversized_root: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = oversized_root
    with pytest.raises(
        PrepareError, match=r"products/.*product image is 80x80, expected 64x64.*on_size_mismatch: resize"
    ):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)


def test_wrong_size_is_resized_when_asked(oversized_root: tuple[Path, str], tmp_path: Path) -> None:
    root, victim = oversized_root
    cfg = SMALL.model_copy(update={"on_size_mismatch": "resize", "interpolation": "area"})
    summary = prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", cfg)
    assert summary.resized == 1
    rows = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out").glob("*.parquet")).to_pylist()
    product = next(r["product"] for r in rows if r["id"] == victim)
    with Image.open(io.BytesIO(product)) as image:
        assert image.size == (64, 64) and image.mode == "RGBA"


def test_unselected_splits_are_counted_not_written(synth_manifest_root: Path, tmp_path: Path) -> None:
    cfg = SMALL.model_copy(update={"splits": ["test"], "include_depth": False})
    summary = prepare_shards(synth_manifest_root, synth_manifest_root / layout.MANIFEST_FILE, tmp_path / "out", cfg)
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert list(index["splits"]) == ["test"] and "depth" not in index["columns"]
    assert sum(index["skipped"].values()) + index["splits"]["test"]["rows"] == summary.rows_in == 32
    assert {p.name.split("-")[0] for p in (tmp_path / "out").glob("*.parquet")} == {"test"}


def test_config_rejects_unknown_fields_and_splits() -> None:
    with pytest.raises(ValueError, match="extra"):
        PrepareConfig.model_validate({"samples_per_shard": 5, "shard_size": 3})
    with pytest.raises(ValueError, match="splits must be"):
        PrepareConfig(splits=["train", "holdout"])


CFG = PrepareConfig(image_size=8)


def test_png_for_converts_jpeg_and_sixteen_bit_maps() -> None:
    jpeg = _png(Image.new("RGB", (8, 8), (200, 10, 10)), "JPEG")
    data, resized = png_for(jpeg, "image", "x.jpg", CFG)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size, resized) == ("PNG", "RGB", (8, 8), False)
    wide = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    data, _ = png_for(_png(wide), "depth", "d.png", CFG)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L" and np.asarray(image).min() == 255


@pytest.mark.parametrize(
    ("kind", "image", "message"),
    [
        ("product", Image.new("RGB", (8, 8)), "p.png: product image .* has no alpha channel"),
        ("image", Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "p.png: generated image has transparent pixels"),
        ("depth", Image.new("RGB", (8, 8), (1, 2, 3)), "p.png: depth map must be a greyscale image"),
    ],
)
def test_png_for_refuses_lossy_conversions(kind: str, image: Image.Image, message: str) -> None:
    with pytest.raises(PrepareError, match=message):
        png_for(_png(image), kind, "p.png", CFG)


def test_png_for_names_a_corrupt_file() -> None:
    with pytest.raises(ValueError, match=r"bad\.png: cannot read image header"):
        png_for(b"not an image", "image", "bad.png", CFG)
    data = bytearray(_png(Image.new("RGB", (8, 8), (9, 9, 9))))
    data[-20] ^= 0xFF  # inside the last chunk before IEND: its checksum no longer matches
    with pytest.raises(ValueError, match=r"bad\.png: corrupt PNG"):
        png_for(bytes(data), "image", "bad.png", CFG)


def test_tar_gz_packages_give_the_same_rows_as_zip(synth_zip_manifest_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_zip_manifest_root, tmp_path)
    for archive in sorted(root.glob("*.zip")):
        with zipfile.ZipFile(archive) as zf, tarfile.open(archive.with_suffix(".tar.gz"), "w:gz") as tf:
            for info in reversed(zf.infolist()):  # another member order than the manifest's
                member = tarfile.TarInfo(info.filename)
                member.size = info.file_size
                tf.addfile(member, io.BytesIO(zf.read(info)))
        archive.unlink()
    table = pq.read_table(root / layout.MANIFEST_FILE)
    for kind in layout.FILE_KINDS:
        tars = pc.replace_substring(table[kind], ".zip", ".tar.gz")
        table = table.set_column(table.schema.get_field_index(kind), kind, tars)
    pq.write_table(table, root / layout.MANIFEST_FILE)
    prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "tar", SMALL)
    zipped = synth_zip_manifest_root
    prepare_shards(zipped, zipped / layout.MANIFEST_FILE, tmp_path / "zip", SMALL)

    def rows(folder: Path) -> list[dict[str, object]]:
        tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
        return sorted(pa.concat_tables(tables).to_pylist(), key=lambda r: str(r["id"]))

    assert rows(tmp_path / "tar") == rows(tmp_path / "zip")


def test_row_without_split_is_named(synth_manifest_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_manifest_root, tmp_path)
    table = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    table[7]["split"] = None
    pq.write_table(pa.Table.from_pylist(table, schema=layout.manifest_schema()), root / layout.MANIFEST_FILE)
    with pytest.raises(
        PrepareError, match=rf"manifest.parquet row 7 \(id {table[7]['id']}, .*\): the row has no split"
    ):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)


def test_row_without_a_depth_map_is_named_unless_depth_is_left_out(synth_manifest_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_manifest_root, tmp_path)
    table = pq.read_table(root / layout.MANIFEST_FILE).to_pylist()
    table[4]["depth"] = None
    pq.write_table(pa.Table.from_pylist(table, schema=layout.manifest_schema()), root / layout.MANIFEST_FILE)
    with pytest.raises(
        PrepareError, match=r"row 4 \(id .*\): the manifest names no depth file; set data.prepare.include_depth: false"
    ):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", SMALL)
    cfg = SMALL.model_copy(update={"include_depth": False})
    assert sum(prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "out", cfg).rows_written.values()) == 32


def test_manifest_without_member_columns_is_refused(synth_manifest_root: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(synth_manifest_root / layout.MANIFEST_FILE).drop_columns(["product_member"]), manifest)
    with pytest.raises(PrepareError, match=r"lacks column\(s\) \['product_member'\].*rad data import"):
        prepare_shards(synth_manifest_root, manifest, tmp_path / "out", SMALL)


def test_a_verdict_on_another_manifest_is_refused(synth_manifest_root: Path, tmp_path: Path) -> None:
    """Validated, then imported again with a line less: the verdict's ids no longer describe the manifest."""
    root = _copy(synth_manifest_root, tmp_path)
    validate_dataset(root, ValidationConfig(data_docs=False), root / "validation")
    lines = (root / layout.LABEL_FILE).read_text().splitlines(keepends=True)
    (root / layout.LABEL_FILE).write_text("".join(lines[1:]))
    import_dataset(root, ImportConfig())
    with pytest.raises(
        PrepareError, match=r"validation.json is the verdict on another manifest .* run `rad data validate"
    ):
        prepare_shards(root, root / layout.MANIFEST_FILE, tmp_path / "shards", SMALL, validation=root / "validation")
    assert not (tmp_path / "shards").exists()


def test_a_missing_verdict_is_refused_when_asked_for(synth_manifest_root: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"nowhere: no validation.json; run `rad data validate` with --out-dir "):
        prepare_shards(
            synth_manifest_root,
            synth_manifest_root / layout.MANIFEST_FILE,
            tmp_path / "shards",
            SMALL,
            validation=tmp_path / "nowhere",
        )
