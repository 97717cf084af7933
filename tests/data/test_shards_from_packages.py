"""Import, validate and prepare RF1M-synth with every file in packages: the same shards as from folders."""

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, PrepareConfig, SynthConfig, ValidationConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.shard_format import BLOB_COLUMNS
from reliable_ad.data.shards import META_COLUMNS, prepare_shards
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.data.validate import validate_dataset

N = 32


def _pipeline(folder: Path, archives: int) -> tuple[Path, Path]:
    """write_synth -> import -> validate -> prepare; returns (dataset root, shard folder)."""
    root = folder / "ds"
    write_synth(SynthConfig(n=N, seed=5), root, archives=archives)
    imported = import_dataset(root, ImportConfig())
    assert imported.rows_accepted == N
    validated = validate_dataset(root, ValidationConfig(data_docs=False), folder / "validation")
    assert validated.success and validated.rows_quarantined == 0, validated.summary
    assert validated.file_pass is not None and validated.file_pass.images == N
    shards = folder / "shards"
    prepare_shards(root, root / layout.MANIFEST_FILE, shards, PrepareConfig(samples_per_shard=10, row_group_rows=4))
    return root, shards


def _rows_by_id(shards: Path) -> dict[str, dict[str, object]]:
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(shards.glob("*.parquet"))).to_pylist()
    return {str(row["id"]): row for row in rows}


def _pixels(png: object) -> np.ndarray:
    assert isinstance(png, bytes)
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


def test_packages_give_the_same_shards_as_folders_pixel_for_pixel(tmp_path: Path) -> None:
    packed_root, packed = _pipeline(tmp_path / "packed", archives=2)
    plain_root, plain = _pipeline(tmp_path / "plain", archives=0)

    assert sorted(p.name for p in packed_root.iterdir() if p.is_dir()) == []  # all kinds in the packages
    assert not list(plain_root.glob("*.zip"))
    manifest = pq.read_table(packed_root / layout.MANIFEST_FILE).to_pylist()
    for kind in layout.FILE_KINDS:
        assert {row[kind] for row in manifest} == {"samples_00.zip", "samples_01.zip"}
        assert all(row[f"{kind}_member"] for row in manifest)

    from_packages, from_folders = _rows_by_id(packed), _rows_by_id(plain)
    assert sorted(from_packages) == sorted(from_folders) and len(from_packages) == N
    for sample_id, row in from_packages.items():
        other = from_folders[sample_id]
        assert {c: row[c] for c in META_COLUMNS} == {c: other[c] for c in META_COLUMNS}
        for kind in BLOB_COLUMNS:
            assert np.array_equal(_pixels(row[kind]), _pixels(other[kind])), (sample_id, kind)
