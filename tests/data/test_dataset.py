import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reliable_ad.data import dataset as dataset_module
from reliable_ad.data import layout
from reliable_ad.data.config import PrepareConfig
from reliable_ad.data.dataset import (
    ShardDataset,
    ShardIndexError,
    UnknownLabelError,
    count,
    load_split,
    read_column,
    read_index,
)
from reliable_ad.data.shards import prepare_shards
from reliable_ad.labels import LabelSet


@pytest.fixture(scope="module")
def shard_dir(synth_zip_manifest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of the zip synth set with several shards and row groups per split."""
    out = tmp_path_factory.mktemp("shards") / "shards"
    root = synth_zip_manifest_root
    prepare_shards(root, root / layout.MANIFEST_FILE, out, PrepareConfig(samples_per_shard=7, row_group_rows=3))
    return out


def _ids(samples: object) -> list[str]:
    return [s["id"] for s in samples]  # type: ignore[attr-defined]


def _pixels(image: Image.Image) -> torch.Tensor:
    array = np.array(image)
    return torch.from_numpy(array if array.ndim == 3 else array[:, :, None]).permute(2, 0, 1)


def test_round_trip_is_pixel_exact(shard_dir: Path, synth_zip_manifest_root: Path) -> None:
    members = {}
    for archive in synth_zip_manifest_root.glob("*.zip"):
        with zipfile.ZipFile(archive) as zf:
            members.update({name: zf.read(name) for name in zf.namelist()})
    samples = list(ShardDataset(shard_dir, "train")) + list(ShardDataset(shard_dir, "test"))
    assert sorted(f"images/{i}.png" for i in _ids(samples)) == sorted(m for m in members if m.startswith("images/"))
    kinds = (("image", "images", 3), ("product", "products", 4), ("depth", "depth", 1), ("saliency", "saliency", 1))
    for sample in samples:
        assert sample["image"].dtype == torch.float32
        for kind, folder, channels in kinds:
            with Image.open(io.BytesIO(members[f"{folder}/{sample['id']}.png"])) as image:
                original = _pixels(image)
            assert sample[kind].shape == (channels, 64, 64)
            assert torch.equal((sample[kind] * 255).round().to(torch.uint8), original)
        assert isinstance(sample["caption"], str) and sample["caption"]
        assert 0 <= sample["label"] < 6


def test_count_index_and_metadata_columns(shard_dir: Path) -> None:
    streamed = list(ShardDataset(shard_dir, "train", modalities=["image"]))
    assert count(shard_dir, "train") == len(streamed) == ShardDataset(shard_dir, "train").count()
    index = read_index(shard_dir)
    assert index["rows"]["train"] == len(streamed) and index["maps"] == {
        "depth": "ground",
        "saliency": "frequency_tuned",
    }
    assert read_column(shard_dir, "train", "title") == [s["caption"] for s in streamed]
    with pytest.raises(ShardIndexError, match="'image' is not a metadata column"):
        read_column(shard_dir, "train", "image")


def test_collate_batches_tensors_and_strings(shard_dir: Path) -> None:
    data = ShardDataset(shard_dir, "test", modalities=["image", "depth"])
    batch = next(iter(DataLoader(data, batch_size=3, collate_fn=data.collate)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["depth"].shape == (3, 1, 64, 64)
    assert batch["label"].dtype == torch.int64 and len(batch["caption"]) == len(batch["id"]) == 3


@pytest.mark.parametrize("shuffle_buffer", [0, 5])
def test_two_workers_yield_every_row_once_per_epoch(shard_dir: Path, shuffle_buffer: int) -> None:
    data = ShardDataset(shard_dir, "train", modalities=["depth"], shuffle_buffer=shuffle_buffer, seed=1)
    loader = DataLoader(data, batch_size=4, num_workers=2)
    expected = sorted(_ids(ShardDataset(shard_dir, "train", modalities=["depth"])))
    for epoch in (0, 1):
        data.set_epoch(epoch)
        ids = [i for batch in loader for i in batch["id"]]
        assert sorted(ids) == expected and len(ids) == data.count()


def test_distributed_ranks_take_disjoint_row_groups(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = Counter(_ids(ShardDataset(shard_dir, "train", modalities=["depth"])))
    monkeypatch.setattr(dataset_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dataset_module.dist, "get_world_size", lambda: 3)
    seen: list[str] = []
    for rank in range(3):
        monkeypatch.setattr(dataset_module.dist, "get_rank", lambda rank=rank: rank)
        mine = _ids(ShardDataset(shard_dir, "train", modalities=["depth"], shuffle_buffer=4))
        assert mine
        seen += mine
    assert Counter(seen) == everything
    unsharded = ShardDataset(shard_dir, "train", modalities=["depth"], shard_by_rank=False)
    assert Counter(_ids(unsharded)) == everything


def test_shuffle_changes_with_the_epoch_and_repeats_with_the_seed(shard_dir: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        data = ShardDataset(shard_dir, "train", modalities=["depth"], shuffle_buffer=6, seed=seed)
        data.set_epoch(epoch)
        return _ids(data)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(0, 0)) == sorted(order(0, 1))
    assert _ids(ShardDataset(shard_dir, "train", modalities=["depth"])) != order(0, 0)


def test_label_outside_the_label_set_is_an_error_or_filtered(shard_dir: Path) -> None:
    five = LabelSet(tuple(n for n in LabelSet().names if n != "unsuitable"))
    labels = Counter(
        s["label"] for s in ShardDataset(shard_dir, "train", modalities=["depth"])
    )  # indices in the full set
    assert labels[LabelSet().index("unsuitable")] > 0, "the fixture must contain an 'unsuitable' row"
    with pytest.raises(UnknownLabelError, match=r"split 'train' has rows labelled \['unsuitable'\].*'skip'"):
        ShardDataset(shard_dir, "train", label_set=five)
    kept = list(ShardDataset(shard_dir, "train", label_set=five, modalities=["depth"], unknown_labels="skip"))
    assert len(kept) == ShardDataset(shard_dir, "train", label_set=five, unknown_labels="skip").count()
    assert len(kept) == sum(labels.values()) - labels[LabelSet().index("unsuitable")]
    assert {s["label"] for s in kept} <= set(range(5))


def test_modalities_subset_and_absent_modality(shard_dir: Path, synth_manifest_root: Path, tmp_path: Path) -> None:
    sample = next(iter(ShardDataset(shard_dir, "test", modalities=["image", "saliency"])))
    assert {"image", "saliency"} <= set(sample) and not {"product", "depth"} & set(sample)
    out = tmp_path / "nodepth"
    root = synth_manifest_root
    prepare_shards(root, root / layout.MANIFEST_FILE, out, PrepareConfig(include_depth=False, include_saliency=False))
    with pytest.raises(
        ShardIndexError, match=r"modalities \['image', 'depth'\] asked.*prepared \['image', 'product'\]"
    ):
        ShardDataset(out, "train", modalities=["image", "depth"])
    assert set(next(iter(ShardDataset(out, "train")))) >= {"image", "product"}  # default: what was prepared
    with pytest.raises(ShardIndexError, match="no split 'holdout'"):
        ShardDataset(out, "holdout")


def test_load_split_matches_the_stream(shard_dir: Path) -> None:
    split = load_split(shard_dir, "test")
    streamed = list(ShardDataset(shard_dir, "test"))
    assert len(split) == len(streamed) == count(shard_dir, "test")
    assert split[3]["id"] == streamed[3]["id"] and torch.equal(split[3]["product"], streamed[3]["product"])
    with pytest.raises(ValueError, match="max_rows"):
        load_split(shard_dir, "test", max_rows=2)
