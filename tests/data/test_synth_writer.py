import json
import zipfile

import pytest

from reliable_ad.data import layout
from reliable_ad.data.synth.world import SynthConfig
from reliable_ad.data.synth.writer import write_synth


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(tmp_path) -> None:
    summary = write_synth(SynthConfig(n=30), tmp_path / "ds")
    root = tmp_path / "ds"
    lines = (root / layout.LABEL_FILE).read_text().splitlines()
    assert len(lines) == 30 and sum(summary["labels"].values()) == 30
    name, label = lines[0].split("\t")
    assert 1 <= int(label) <= 6
    for folder in (layout.IMAGES_DIR, layout.PRODUCTS_DIR, layout.DEPTH_DIR, layout.SALIENCY_DIR):
        assert (root / folder / name).is_file()
    meta = [json.loads(line) for line in (root / layout.METADATA_FILE).read_text().splitlines()]
    assert [m["image"] for m in meta] == [line.split("\t")[0] for line in lines]
    assert {"prompt", "title", "product_id", "split", "height_cm"} <= set(meta[0])


@pytest.mark.parametrize("archives", [0, 2])
def test_same_dataset_whatever_the_worker_count(tmp_path, archives: int) -> None:
    write_synth(SynthConfig(n=24, seed=3), tmp_path / "one", workers=1, archives=archives)
    write_synth(SynthConfig(n=24, seed=3), tmp_path / "two", workers=2, archives=archives)
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    one.pop("synth.json"), two.pop("synth.json")
    assert one == two


def test_packages_hold_every_file_of_every_sample(tmp_path) -> None:
    write_synth(SynthConfig(n=20), tmp_path / "ds", archives=2)
    write_synth(SynthConfig(n=20), tmp_path / "plain")
    root = tmp_path / "ds"
    packages = ["samples_00.zip", "samples_01.zip"]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [layout.LABEL_FILE, layout.METADATA_FILE, "synth.json", *packages]
    )
    members = {}
    for package in packages:
        with zipfile.ZipFile(root / package) as zf:
            names = zf.namelist()
            assert len(names) == 40
            stems = [name.split("/")[1] for name in names]
            assert all(stems[k : k + 4] == [stems[k]] * 4 for k in range(0, 40, 4))  # a sample's files together
            members.update({name: zf.read(name) for name in names})
    plain = _tree(tmp_path / "plain")
    assert {name: data for name, data in plain.items() if "/" in name} == members  # the same files, byte for byte
    for name in (layout.LABEL_FILE, layout.METADATA_FILE):
        assert (root / name).read_bytes() == plain[name]


def test_more_packages_than_samples_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="archives=4 is more than the 3 samples"):
        write_synth(SynthConfig(n=3), tmp_path / "ds", archives=4)


def test_existing_dataset_is_not_overwritten(tmp_path) -> None:
    write_synth(SynthConfig(n=5), tmp_path / "ds")
    before = _tree(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="--force"):
        write_synth(SynthConfig(n=6), tmp_path / "ds")
    assert _tree(tmp_path / "ds") == before
