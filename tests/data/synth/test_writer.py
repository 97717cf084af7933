import hashlib
import json
import zipfile

import pytest

from reliable_ad.data import layout
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.labels import RF1M_LABELS

# SHA-256 of one sample's files as written (label line, metadata line, image, product, depth and saliency
# PNGs), one sample of each label, pinned at 3c6c5e4: RF1M-synth is versioned data, so a change to the
# renderer, the maps or the writer that alters any byte must be deliberate (update these with the reason)
GOLDEN = {
    "s0-0000004": "696bbd1eee49fdd182be80f654ab41f01aa969e283ced7b771827f58e3bf89f9",  # unsuitable
    "s0-0000005": "d35450cfc26fe946bef946af201b3ac162af5337c6d7ac709195affa579d8eb1",  # space_mismatch
    "s0-0000008": "49c1559e793ae1951d00c8ccf67d05768b070d568f99de0d4d53972cbb32de8f",  # indistinctiveness
    "s0-0000009": "d0ef9af12f8e30852fe29aec12744b38f0e9bc6a8cd3b8955e5164761daa8e01",  # size_mismatch
    "s0-0000011": "708948a545ed1a6caf23ed732d6201c044f52159b630eb8a1ac14b9ec0ae7298",  # shape_hallucination
    "s0-0000012": "b135447639e09b9fcea1661faca4e1ebc494135841554c29c861edc3c2890010",  # available
}


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


def test_samples_of_every_label_match_their_golden_digest(tmp_path) -> None:
    root = tmp_path / "ds"
    write_synth(SynthConfig(n=13, seed=0, class_mix={name: 1.0 for name in RF1M_LABELS.values()}), root)
    labels = dict(line.split("\t") for line in (root / layout.LABEL_FILE).read_text().splitlines())
    meta = {json.loads(line)["image"]: line for line in (root / layout.METADATA_FILE).read_text().splitlines()}
    digests = {}
    for sample in GOLDEN:
        name = f"{sample}.png"
        digest = hashlib.sha256((labels[name] + meta[name]).encode())
        for folder in (layout.IMAGES_DIR, layout.PRODUCTS_DIR, layout.DEPTH_DIR, layout.SALIENCY_DIR):
            digest.update((root / folder / name).read_bytes())
        digests[sample] = digest.hexdigest()
    assert digests == GOLDEN
