"""Stream prepared shards (see `reliable_ad.data.shards`) into PyTorch with bounded memory.

The unit of work is a Parquet row group. Every epoch the row groups of a split are put in one order that all
processes agree on (a permutation seeded by seed + epoch when shuffling), and partition ``p`` of ``P`` takes
every P-th one, where the partitions are the DataLoader workers of every distributed rank. So each row is read
exactly once per epoch, by one worker of one rank, and memory holds one row group plus the shuffle buffer.

Distributed use: with ``shard_by_rank=True`` (default) the rank and world size come from ``torch.distributed``
when it is initialised, and each rank reads only its own row groups; then do not hand the DataLoader to
``accelerator.prepare`` (accelerate would split the rank's stream once more). With ``shard_by_rank=False`` every
rank yields the whole split in the same order, which is what accelerate's own splitting (``dispatch_batches``
or ``IterableDatasetShard``) expects. Ranks may receive unequal numbers of rows (row-group granularity).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from reliable_ad.data.imageio import ImageDecodeError, decode
from reliable_ad.data.shard_format import BLOB_COLUMNS, INDEX_FILE, SCHEMA_VERSION, TARGET_MODE
from reliable_ad.errors import InputError
from reliable_ad.labels import LabelSet

UnknownLabels = Literal["error", "skip"]
_ROW_COLUMNS = ("id", "label", "title", "product_id", "source")


class ShardIndexError(InputError):
    """index.json is missing, of another schema version, or lacks the split or a modality asked for."""


class UnknownLabelError(InputError):
    """A row's label is not in the label set given to the dataset."""


@dataclass(frozen=True)
class RowGroup:
    """One row group of one shard: the unit a worker reads."""

    file: str
    index: int
    rows: int


class ShardIndex:
    """The content of a shard folder's index.json."""

    def __init__(self, shard_dir: Path) -> None:
        path = shard_dir / INDEX_FILE
        if not path.is_file():
            raise ShardIndexError(f"{path}: no shard index (run `rad data prepare` first)")
        self.shard_dir = shard_dir
        self.data: dict[str, Any] = json.loads(path.read_text())
        version = self.data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ShardIndexError(f"{path}: schema_version {version}, this reader knows {SCHEMA_VERSION}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.data["modalities"])

    def _split(self, split: str) -> dict[str, Any]:
        splits = self.data["splits"]
        if split not in splits:
            raise ShardIndexError(f"{self.shard_dir / INDEX_FILE}: no split {split!r}; prepared: {sorted(splits)}")
        return dict(splits[split])

    def labels(self, split: str) -> dict[str, int]:
        return dict(self._split(split)["labels"])

    def count(self, split: str, label_set: LabelSet | None = None) -> int:
        """Rows of a split; with a label set, only the rows whose label is in it."""
        labels = self.labels(split)
        return sum(n for name, n in labels.items() if label_set is None or name in label_set)

    def row_groups(self, split: str) -> list[RowGroup]:
        return [
            RowGroup(shard["file"], k, rows)
            for shard in self._split(split)["shards"]
            for k, rows in enumerate(shard["row_groups"])
        ]


def count(shard_dir: Path, split: str, label_set: LabelSet | None = None) -> int:
    """Rows of a split according to index.json (no shard is opened)."""
    return ShardIndex(shard_dir).count(split, label_set)


def read_index(shard_dir: Path) -> dict[str, Any]:
    """index.json as a dict (schema version checked): rows, label_counts and maps per split, shards, config."""
    return ShardIndex(shard_dir).data


def read_column(shard_dir: Path, split: str, column: str) -> list[Any]:
    """One metadata column of a whole split (e.g. the titles, to build a vocabulary), without any image bytes."""
    index = ShardIndex(shard_dir)
    if column in BLOB_COLUMNS or column not in index.data["columns"]:
        raise ShardIndexError(f"{shard_dir / INDEX_FILE}: {column!r} is not a metadata column of the shards")
    files = dict.fromkeys(group.file for group in index.row_groups(split))
    return [value for name in files for value in pq.read_table(shard_dir / name, columns=[column])[column].to_pylist()]


def partition(shard_by_rank: bool = True) -> tuple[int, int]:
    """(this process's partition, number of partitions) over DataLoader workers and distributed ranks."""
    rank, world = 0, 1
    if shard_by_rank and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


def decode_png(data: bytes, modality: str, where: str) -> torch.Tensor:
    """PNG bytes to a float tensor in [0, 1], channels first (3, 4 or 1 channels by modality)."""
    image = decode(data, where)
    if image.mode != TARGET_MODE[modality]:
        raise ImageDecodeError(f"{where}: {modality} is {image.mode}, expected {TARGET_MODE[modality]}")
    pixels = np.array(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)


class _Reader:
    """Reads rows of row groups with their label index; shared by the iterable and the in-memory dataset."""

    def __init__(
        self,
        shard_dir: Path,
        split: str,
        label_set: LabelSet,
        modalities: Sequence[str] | None,
        unknown_labels: UnknownLabels,
    ) -> None:
        self.index = ShardIndex(shard_dir)
        self.shard_dir, self.split, self.label_set = shard_dir, split, label_set
        self.modalities = self.index.modalities if modalities is None else tuple(modalities)
        self.unknown_labels = unknown_labels
        wrong = [m for m in self.modalities if m not in BLOB_COLUMNS]
        absent = [m for m in self.modalities if m in BLOB_COLUMNS and m not in self.index.modalities]
        if wrong or absent or not self.modalities:
            raise ShardIndexError(
                f"{shard_dir / INDEX_FILE}: modalities {list(self.modalities)} asked; known {list(BLOB_COLUMNS)}, "
                f"prepared {list(self.index.modalities)}"
            )
        if unknown_labels not in ("error", "skip"):
            raise ValueError(f"unknown_labels must be 'error' or 'skip', got {unknown_labels!r}")
        outside = sorted(set(self.index.labels(split)) - set(label_set.names))
        if outside and unknown_labels == "error":
            raise UnknownLabelError(
                f"{shard_dir / INDEX_FILE}: split {split!r} has rows labelled {outside}, not in the label set "
                f"{list(label_set.names)}; pass unknown_labels='skip' to leave those rows out"
            )

    def rows(self, group: RowGroup, order: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        """Rows of one row group (in `order` if given), labelled; rows outside the label set skipped or refused."""
        table = pq.ParquetFile(self.shard_dir / group.file).read_row_group(
            group.index, columns=[*_ROW_COLUMNS, *self.modalities]
        )
        rows = table.to_pylist()
        for k in order if order is not None else range(len(rows)):
            row = rows[k]
            if row["label"] not in self.label_set:
                if self.unknown_labels == "skip":
                    continue
                raise UnknownLabelError(
                    f"{group.file} row group {group.index} row {k} (id {row['id']}): label {row['label']!r} "
                    f"is not in the label set {list(self.label_set.names)}"
                )
            row["label_index"] = self.label_set.index(row["label"])
            row["_where"] = f"{group.file} row group {group.index} row {k} (id {row['id']})"
            yield row

    def sample(self, row: dict[str, Any]) -> dict[str, Any]:
        """The training sample of a raw row: decoded tensors, label index, caption and ids."""
        sample: dict[str, Any] = {
            "id": row["id"],
            "product_id": row["product_id"],
            "source": row["source"],
            "caption": row["title"],
            "label": row["label_index"],
        }
        for modality in self.modalities:
            sample[modality] = decode_png(row[modality], modality, f"{row['_where']} {modality}")
        return sample


class ShardDataset(IterableDataset[dict[str, Any]]):
    """One split of a shard folder as a stream of samples.

    Each sample is a dict: ``image`` (3xHxW), ``product`` (4xHxW RGBA), ``depth`` and ``saliency`` (1xHxW), all
    float in [0, 1], for the asked `modalities` (default: all prepared ones); ``label`` (index in `label_set`),
    ``caption`` (the product title), ``id``, ``product_id`` and ``source`` (the dataset folder it came from).

    ``shuffle_buffer=0`` streams rows in shard order. ``shuffle_buffer>0`` shuffles the row-group order and the
    rows inside each row group, then mixes rows through a buffer of that many rows; the order is a function of
    (seed, epoch, number of partitions). Call `set_epoch` before each epoch (it reaches workers unless the
    DataLoader keeps persistent workers).
    """

    def __init__(
        self,
        shard_dir: Path,
        split: str,
        label_set: LabelSet | None = None,
        modalities: Sequence[str] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        unknown_labels: UnknownLabels = "error",
        shard_by_rank: bool = True,
    ) -> None:
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.reader = _Reader(shard_dir, split, label_set or LabelSet(), modalities, unknown_labels)
        self.shuffle_buffer, self.seed, self.shard_by_rank = shuffle_buffer, seed, shard_by_rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Batch samples: tensors stacked, labels as a tensor, strings (id, caption, product_id, source) as lists."""
        return dict(default_collate(samples))

    def count(self) -> int:
        """Rows one epoch yields over all partitions (from index.json)."""
        return self.reader.index.count(self.reader.split, self.reader.label_set)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        part, parts = partition(self.shard_by_rank)
        groups = self.reader.index.row_groups(self.reader.split)
        if self.shuffle_buffer:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(groups))
            groups = [groups[k] for k in order]
        rows = self._rows(groups[part::parts], np.random.default_rng([self.seed, self.epoch, part, parts]))
        for row in rows:
            yield self.reader.sample(row)

    def _rows(self, groups: list[RowGroup], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        if not self.shuffle_buffer:
            for group in groups:
                yield from self.reader.rows(group)
            return
        buffer: list[dict[str, Any]] = []
        for group in groups:
            for row in self.reader.rows(group, rng.permutation(group.rows).tolist()):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(row)
                    continue
                k = int(rng.integers(len(buffer)))
                yield buffer[k]
                buffer[k] = row
        rng.shuffle(buffer)
        yield from buffer


class InMemorySplit(Dataset[dict[str, Any]]):
    """A small split held as PNG bytes in memory, decoded per item: map-style, for evaluation."""

    def __init__(self, reader: _Reader, rows: list[dict[str, Any]]) -> None:
        self.reader, self.rows = reader, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.reader.sample(self.rows[index])


def load_split(
    shard_dir: Path,
    split: str,
    label_set: LabelSet | None = None,
    modalities: Sequence[str] | None = None,
    unknown_labels: UnknownLabels = "error",
    max_rows: int = 100_000,
) -> InMemorySplit:
    """Load a whole split in shard order; refuses splits over `max_rows` rows rather than exhausting memory."""
    reader = _Reader(shard_dir, split, label_set or LabelSet(), modalities, unknown_labels)
    total = reader.index.count(split)
    if total > max_rows:
        raise ValueError(f"split {split!r} of {shard_dir} has {total} rows > max_rows={max_rows}; stream it instead")
    rows = [row for group in reader.index.row_groups(split) for row in reader.rows(group)]
    return InMemorySplit(reader, rows)
