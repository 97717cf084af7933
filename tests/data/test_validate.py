"""Dataset validation: the GX suite on the manifest and the file pass, on RF1M-synth with one defect per test."""

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, SynthConfig, ValidationConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.data.validate import ValidationResult, check_images, load_manifest, validate_dataset

N = 32
QUICK = ValidationConfig(data_docs=False)


def _synth(root: Path, archives: int = 0) -> Path:
    write_synth(SynthConfig(n=N), root, archives=archives)
    import_dataset(root, ImportConfig())
    return root


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Imported RF1M-synth with plain files; shared, so tests copy it before changing it."""
    return _synth(tmp_path_factory.mktemp("validate") / "plain")


@pytest.fixture
def root(clean_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean_root, tmp_path / "ds"))


def _rows(root: Path) -> list[dict]:
    return pq.read_table(root / layout.MANIFEST_FILE).to_pylist()


def _rewrite_manifest(root: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=layout.manifest_schema()), root / layout.MANIFEST_FILE)


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / layout.REJECTS_FILE).read_text().splitlines()]


def _outcome(result: ValidationResult, description_start: str) -> dict:
    matches = [o for o in result.expectations if o.description.startswith(description_start)]
    assert len(matches) == 1, [o.description for o in result.expectations]
    return matches[0].model_dump()


def _assert_counts(result: ValidationResult, quarantined: int) -> None:
    assert result.rows_in == N == result.rows_accepted + result.rows_quarantined
    assert result.rows_quarantined == quarantined


def test_clean_dataset_passes_and_writes_reports_and_data_docs(clean_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "validation"
    result = validate_dataset(clean_root, ValidationConfig(), out)

    assert result.success, result.summary
    _assert_counts(result, 0)
    assert result.file_pass is not None and result.file_pass.images == N
    report = json.loads((out / "validation.json").read_text())
    assert (report["success"], report["rows_in"], report["rows_accepted"], report["rows_quarantined"]) == (
        True,
        N,
        N,
        0,
    )
    assert len(report["expectations"]) == len(result.expectations) >= 10
    assert all(e["success"] for e in report["expectations"])
    assert (out / layout.REJECTS_FILE).read_text() == ""
    assert (out / "summary.txt").read_text() == result.summary
    assert "PASSED" in result.summary and "ids are unique" in result.summary
    index = out / "data_docs" / "index.html"
    assert result.data_docs == str(index) and index.is_file()
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "product_test_leak" in pages[0].read_text()


def test_relative_paths_work_as_dvc_passes_them(
    clean_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(clean_root, tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    result = validate_dataset(Path("ds"), ValidationConfig(), Path("reports/validation"))
    assert result.success and (tmp_path / "reports" / "validation" / "data_docs" / "index.html").is_file()


def test_zip_packages_pass_with_two_workers(tmp_path: Path) -> None:
    root = _synth(tmp_path / "zip", archives=2)
    result = validate_dataset(root, ValidationConfig(workers=2, data_docs=False), tmp_path / "out")

    assert result.success, result.summary
    assert result.file_pass is not None and (result.file_pass.images, result.file_pass.workers) == (N, 2)


def test_corrupt_png_is_quarantined_with_a_reason_naming_the_file(root: Path, tmp_path: Path) -> None:
    row = _rows(root)[3]
    image = root / row["image"]
    image.write_bytes(image.read_bytes()[:120])  # truncated

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 1)
    [reject] = _rejects(tmp_path / "out")
    assert reject["id"] == row["id"] and reject["source_line"] == row["source_line"]
    assert row["image"] in reject["reason"] and "cannot decode" in reject["reason"]
    assert f"{row['id']}: {reject['reason']}" in (tmp_path / "out" / "summary.txt").read_text()
    assert not result.success
    assert not _outcome(result, "files decode")["success"]
    tolerant = validate_dataset(root, ValidationConfig(data_docs=False, max_quarantined_share=0.1), tmp_path / "t")
    assert tolerant.success and tolerant.rows_quarantined == 1


@pytest.fixture(scope="module")
def zip_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Imported RF1M-synth with every file in one zip package; shared, so tests copy it before changing it."""
    return _synth(tmp_path_factory.mktemp("validate") / "zip", archives=1)


def _replace_members(package: Path, replaced: dict[str, bytes | None]) -> None:
    """Rewrite a zip package with some members' bytes replaced (None: the member left out)."""
    with zipfile.ZipFile(package) as old:
        members = {name: old.read(name) for name in old.namelist()}
    with zipfile.ZipFile(package, "w") as new:
        for name, data in {**members, **replaced}.items():
            if data is not None:
                new.writestr(name, data)


@pytest.mark.parametrize("kind", ["image", "product", "depth"])
def test_corrupt_member_of_a_zip_package_is_quarantined(zip_root: Path, tmp_path: Path, kind: str) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    row = _rows(root)[4]
    _replace_members(root / row[kind], {row[f"{kind}_member"]: b"\x89PNG not really"})

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 1)
    [reject] = _rejects(tmp_path / "out")
    assert (reject["id"], reject["source_line"]) == (row["id"], 5)
    assert f"{row[kind]}:{row[f'{kind}_member']}: cannot decode" in reject["reason"]


def test_product_member_missing_from_its_package_is_quarantined(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    rows = _rows(root)
    _replace_members(root / rows[6]["product"], {rows[6]["product_member"]: None})

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 1)
    [reject] = _rejects(tmp_path / "out")
    assert reject["id"] == rows[6]["id"]
    assert reject["reason"] == f"missing file(s): {rows[6]['product']}:{rows[6]['product_member']}"
    assert not _outcome(result, "referenced files exist")["success"]


def test_file_pass_names_the_package_and_member_it_cannot_read(zip_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(zip_root, tmp_path / "ds"))
    frame = load_manifest(root / layout.MANIFEST_FILE)
    frame.loc[2, "saliency_member"] = "saliency/nope.png"
    with tarfile.open(root / "broken.tar.gz", "w:gz") as package:  # then cut short: unreadable after the start
        package.add(root / frame.at[0, "image"], arcname="images/big.zip")
    (root / "broken.tar.gz").write_bytes((root / "broken.tar.gz").read_bytes()[:200])
    frame.loc[5, ["depth", "depth_member"]] = ["broken.tar.gz", "depth/x.png"]

    failures, _ = check_images(root, frame, QUICK)

    assert failures[2] == f"member saliency/nope.png is not in package {frame.at[2, 'saliency']}"
    assert failures[5].startswith("member depth/x.png of package broken.tar.gz not read: package broken.tar.gz")
    assert len(failures) == 2


def test_rgb_product_needs_a_white_background(root: Path, tmp_path: Path) -> None:
    rows = _rows(root)
    rgba = np.asarray(Image.open(root / rows[0]["product"]))
    on_white = np.where(rgba[..., 3:] >= 128, rgba[..., :3], 255).astype(np.uint8)
    Image.fromarray(on_white, "RGB").save(root / rows[0]["product"])  # usable: white background
    Image.new("RGB", (64, 64), (40, 90, 160)).save(root / rows[1]["product"])  # no background to remove

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 1)
    [reject] = _rejects(tmp_path / "out")
    assert reject["id"] == rows[1]["id"]
    assert reject["reason"].startswith(f"{rows[1]['product']}: RGB without alpha and without a white background:")
    assert reject["reason"].endswith("or raise data.validate.white_tolerance to 215 if that is its background")


def test_image_over_the_pixel_limit_is_quarantined(root: Path, tmp_path: Path) -> None:
    row = _rows(root)[5]
    Image.new("RGB", (200, 200), (120, 120, 120)).save(root / row["image"])

    result = validate_dataset(root, ValidationConfig(data_docs=False, max_pixels=100 * 100), tmp_path / "out")

    _assert_counts(result, 1)
    [reject] = _rejects(tmp_path / "out")
    assert reject["reason"] == f"{row['image']}: 200x200 = 40000 pixels exceeds the limit of 10000"


def test_product_of_another_size_and_missing_map_are_quarantined(root: Path, tmp_path: Path) -> None:
    rows = _rows(root)
    Image.new("RGBA", (48, 48), (200, 10, 10, 255)).save(root / rows[2]["product"])
    (root / rows[7]["depth"]).unlink()

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 2)
    reasons = {r["id"]: r["reason"] for r in _rejects(tmp_path / "out")}
    assert reasons[rows[2]["id"]] == f"{rows[2]['product']}: size 48x48 differs from the generated image's 64x64"
    assert reasons[rows[7]["id"]] == f"missing file(s): {rows[7]['depth']}"
    assert not _outcome(result, "referenced files exist")["success"]


def test_manifest_paths_leaving_the_root_are_quarantined(root: Path, tmp_path: Path) -> None:
    rows = _rows(root)
    rows[0]["product"] = "../../etc/passwd"
    rows[1]["saliency"] = "/etc/passwd"
    _rewrite_manifest(root, rows)

    result = validate_dataset(root, QUICK, tmp_path / "out")

    _assert_counts(result, 2)
    reasons = {r["id"]: r["reason"] for r in _rejects(tmp_path / "out")}
    assert "../../etc/passwd" in reasons[rows[0]["id"]] and "escapes the data root" in reasons[rows[0]["id"]]
    assert "/etc/passwd" in reasons[rows[1]["id"]] and "is absolute" in reasons[rows[1]["id"]]


def test_product_in_train_and_test_fails_validation(root: Path, tmp_path: Path) -> None:
    rows = _rows(root)
    product = rows[0]["product_id"]
    same = [r for r in rows if r["product_id"] == product]
    assert len(same) >= 2
    same[0]["split"], same[1]["split"] = "train", "test"
    _rewrite_manifest(root, rows)

    result = validate_dataset(root, QUICK, tmp_path / "out")

    assert not result.success
    leak = _outcome(result, "no product both in test")
    assert not leak["success"] and leak["unexpected_count"] == len(same)
    assert {e["product_id"] for e in leak["examples"]} == {product}
    assert "FAIL  no product both in test and in train/val" in (tmp_path / "out" / "summary.txt").read_text()
    _assert_counts(result, 0)


def test_label_outside_the_configured_label_set_fails_validation(root: Path, tmp_path: Path) -> None:
    rows = _rows(root)
    dropped = rows[0]["label"]
    labels = [name for name in ValidationConfig().labels if name != dropped]

    result = validate_dataset(root, ValidationConfig(labels=labels, data_docs=False), tmp_path / "out")

    assert not result.success
    outcome = _outcome(result, "labels in the label set")
    assert not outcome["success"]
    assert outcome["unexpected_count"] == sum(r["label"] == dropped for r in rows)
    assert outcome["examples"][0]["label"] == dropped


def test_class_share_out_of_bounds_fails_validation(root: Path, tmp_path: Path) -> None:
    cfg = ValidationConfig(class_share_bounds={"available": (0.9, 1.0)}, check_images=False, data_docs=False)
    result = validate_dataset(root, cfg, tmp_path / "out")

    outcome = _outcome(result, "share of available")
    share = sum(r["label"] == "available" for r in _rows(root)) / N
    assert not result.success and not outcome["success"]
    assert outcome["observed"] == pytest.approx(share)


def test_config_refuses_bounds_for_labels_outside_the_set() -> None:
    with pytest.raises(ValueError, match="outside the label set"):
        ValidationConfig(labels=["available", "space_mismatch"], class_share_bounds={"unsuitable": (0.0, 0.5)})
    with pytest.raises(ValueError, match="0 <= min <= max <= 1"):
        ValidationConfig(class_share=(0.5, 0.2))
