"""`rad data prepare`: pack a dataset's manifest and image files into a few large Parquet shards per split.

DVC then tracks tens of files instead of a million. Each shard row holds the PNG bytes of the generated image,
the RGBA product, and (optionally) the depth and saliency maps, next to the row's metadata; ``index.json``
describes the shards. Memory stays flat as the dataset grows:

- the manifest is streamed in record batches, never loaded whole;
- rows whose files are all plain are written in manifest order; the others are written package by package
  (grouped by the package of their first file in one, packages sorted by name), in the package's own member
  order, so a compressed tar is read front to back once per ``package_batch_rows`` rows (`sources.read_rows`);
- each split has one open shard at a time, written row group by row group.

The output is built in a temporary sibling folder and swapped in at the end: a failed run leaves the previous
output untouched. The same input and config give byte-identical shards and index.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from tqdm import tqdm

from reliable_ad.data import layout
from reliable_ad.data.config import DEFAULT_MAX_PIXELS, PrepareConfig
from reliable_ad.data.hashing import sha256_of
from reliable_ad.data.imageio import ImageDecodeError, decode, encode_png
from reliable_ad.data.shard_format import BLOB_COLUMNS, INDEX_FILE, SCHEMA_VERSION, SOURCE_COLUMN, TARGET_MODE
from reliable_ad.data.sources import Location, located, read_rows
from reliable_ad.data.validate import quarantined_ids
from reliable_ad.errors import InputError

META_COLUMNS = ("id", "label_id", "label", "prompt", "title", "product_id", "category", "height_cm", "split")
DESCRIPTION = {"image": "generated image", "product": "product image", "depth": "depth map", "saliency": "saliency map"}
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
_MANIFEST_BATCH_ROWS = 4096
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class PrepareError(InputError):
    """The manifest or a file it names cannot be packed as asked (wrong size, mode, missing column...)."""


class PrepareSummary(BaseModel):
    """What a prepare run wrote; the CLI prints it."""

    out: str
    rows_in: int  # = rows written + rows skipped + rows quarantined
    rows_written: dict[str, int]
    rows_skipped: dict[str, int]
    rows_quarantined: int
    validation: str | None  # the verdict whose quarantined rows were left out
    shards: int
    resized: int
    seconds: float
    rows_per_s: float


def shard_schema(modalities: tuple[str, ...]) -> pa.Schema:
    """Columns of a shard: the row's metadata and source, then one PNG-bytes column per stored modality."""
    meta = {f.name: f.type for f in layout.manifest_schema()}
    columns = [(name, meta[name]) for name in META_COLUMNS] + [(SOURCE_COLUMN, pa.string())]
    return pa.schema(columns + [(m, pa.binary()) for m in modalities])


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.parquet"


# ---------------------------------------------------------------------------------------------- image checks


def _where(manifest: Path, number: int, row: dict[str, Any]) -> str:
    line = f", label.txt line {row['source_line']}" if row.get("source_line") is not None else ""
    return f"{manifest.name} row {number} (id {row['id']}{line})"


def _open_header(data: bytes, source: str) -> Image.Image:
    """Open image bytes reading only the header (size, mode, format); pixels stay undecoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:  # fmt: skip
        raise ImageDecodeError(f"{source}: cannot read image header ({error})") from error
    width, height = image.size
    if width * height > DEFAULT_MAX_PIXELS:
        raise ImageDecodeError(f"{source}: {width}x{height} pixels exceeds the limit of {DEFAULT_MAX_PIXELS}")
    return image


def _verify_png(image: Image.Image, source: str) -> None:
    """Check a PNG's chunk checksums without decoding it, so a corrupt file fails here and not in training."""
    try:
        image.verify()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"{source}: corrupt PNG ({error})") from error


def _opaque(rgba: NDArray[np.uint8], kind: str, source: str) -> NDArray[np.uint8]:
    if int(rgba[..., 3].min()) < 255:
        raise PrepareError(
            f"{source}: {DESCRIPTION[kind]} has transparent pixels; an opaque {TARGET_MODE[kind]} image is expected"
        )
    return rgba[..., :3]


def _to_target(image: Image.Image, kind: str, source: str) -> NDArray[np.uint8]:
    """Pixels in the modality's mode; refuses conversions that would lose or invent information."""
    mode = image.mode
    if kind == "product":
        if not image.has_transparency_data:
            raise PrepareError(
                f"{source}: product image ({mode}) has no alpha channel; import/validate must give it one"
            )
        if mode not in ("RGBA", "LA", "PA", "P", "RGB", "L"):
            raise PrepareError(f"{source}: product image mode {mode} is not supported")
        return np.asarray(image.convert("RGBA"))
    if kind == "image":
        if image.has_transparency_data:
            return _opaque(np.asarray(image.convert("RGBA")), kind, source)
        if mode not in ("RGB", "L", "P", "CMYK", "YCbCr"):
            raise PrepareError(f"{source}: generated image mode {mode} is not supported")
        return np.asarray(image.convert("RGB"))
    if mode == "L":
        return np.asarray(image)
    if mode in _SIXTEEN_BIT_MODES:  # 16-bit maps are scaled to 8 bits: 65535 -> 255
        wide = np.asarray(image).astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if mode in ("RGB", "RGBA"):
        pixels = np.asarray(image)
        grey = pixels[..., 0]
        if all(np.array_equal(grey, pixels[..., c]) for c in (1, 2)) and (mode == "RGB" or pixels[..., 3].min() == 255):
            return np.ascontiguousarray(grey)
    raise PrepareError(f"{source}: {DESCRIPTION[kind]} must be a greyscale image, got mode {mode}")


def _resize(pixels: NDArray[np.uint8], side: int, interpolation: str) -> NDArray[np.uint8]:
    image = Image.fromarray(pixels)  # RGBA is resized with premultiplied alpha by Pillow
    return np.asarray(image.resize((side, side), INTERPOLATIONS[interpolation]))


def png_for(data: bytes, kind: str, source: str, cfg: PrepareConfig) -> tuple[bytes, bool]:
    """The PNG bytes stored for one modality, and whether it was resized.

    A PNG already in the right mode and size is stored as is (checksums verified); anything else is decoded,
    converted, resized if the config allows, and re-encoded.
    """
    header = _open_header(data, source)
    width, height = header.size
    size_ok = header.size == (cfg.image_size, cfg.image_size)
    if header.format == "PNG" and header.mode == TARGET_MODE[kind] and size_ok:
        _verify_png(header, source)
        return data, False
    if not size_ok and cfg.on_size_mismatch == "refuse":
        raise PrepareError(
            f"{source}: {DESCRIPTION[kind]} is {width}x{height}, expected {cfg.image_size}x{cfg.image_size} "
            "(data.prepare.image_size, --image-size); set data.prepare.on_size_mismatch: resize "
            f"(or --on-size-mismatch resize) to resize it with {cfg.interpolation!r} interpolation"
        )
    pixels = _to_target(decode(data, source), kind, source)
    if not size_ok:
        pixels = _resize(pixels, cfg.image_size, cfg.interpolation)
    return encode_png(pixels), not size_ok


# ---------------------------------------------------------------------------------------------- shard writing


class _SplitWriter:
    """Writes one split's rows into numbered shards, one row group at a time."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, cfg: PrepareConfig) -> None:
        self.folder, self.split, self.schema, self.cfg = folder, split, schema, cfg
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.shards: list[dict[str, Any]] = []
        self.labels: dict[str, int] = {}
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        self.labels[row["label"]] = self.labels.get(row["label"], 0) + 1
        in_shard = self.shards[-1]["rows"] if self.writer is not None else 0
        if len(self.buffer) >= min(self.cfg.row_group_rows, self.cfg.samples_per_shard - in_shard):
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            name = shard_name(self.split, len(self.shards))
            self.writer = _parquet_writer(self.folder / name, self.schema)
            self.shards.append({"file": name, "rows": 0, "row_groups": []})
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
        shard = self.shards[-1]
        shard["rows"] += len(self.buffer)
        shard["row_groups"].append(len(self.buffer))
        self.rows += len(self.buffer)
        self.buffer = []
        if shard["rows"] >= self.cfg.samples_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self) -> None:
        self._flush()
        self._close_shard()

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "labels": dict(sorted(self.labels.items())), "shards": self.shards}


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """PNG bytes are stored uncompressed (already compressed); metadata columns get zstd and statistics."""
    blobs = [name for name in schema.names if name in BLOB_COLUMNS]
    meta = [name for name in schema.names if name not in BLOB_COLUMNS]
    return pq.ParquetWriter(
        path,
        schema,
        compression={**dict.fromkeys(meta, "zstd"), **dict.fromkeys(blobs, "none")},
        use_dictionary=[n for n in meta if schema.field(n).type == pa.string()],
        write_statistics=meta,
    )


class _ShardSet:
    """One writer per selected split, plus counts of rows left out because their split was not selected."""

    def __init__(self, folder: Path, cfg: PrepareConfig) -> None:
        schema = shard_schema(cfg.modalities())
        self.writers = {split: _SplitWriter(folder, split, schema, cfg) for split in cfg.splits}
        self.skipped: dict[str, int] = {}
        self.quarantined = 0
        self.resized = 0
        self.seen: dict[str, str] = {}  # id -> where it was first stored: ids are unique across sources

    def add(self, row: dict[str, Any], where: str) -> None:
        first = self.seen.setdefault(row["id"], where)
        if first != where:
            raise PrepareError(f"{where}: id {row['id']!r} was already stored from {first}")
        self.writers[row["split"]].add(row)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


# ---------------------------------------------------------------------------------------------- manifest reading


def _required_columns(cfg: PrepareConfig) -> list[str]:
    wanted = {*META_COLUMNS, "source_line"}
    wanted |= {column for kind in cfg.modalities() for column in (kind, layout.member_column(kind))}
    return [f.name for f in layout.manifest_schema() if f.name in wanted]


def _package_of(table: pa.Table, kinds: tuple[str, ...]) -> pa.ChunkedArray:
    """Per row, the package of its first file (in `kinds` order) that lies in one; null where all are plain."""
    in_packages = [pc.if_else(pc.is_valid(table[layout.member_column(k)]), table[k], None) for k in kinds]
    return pc.coalesce(*in_packages)


def _check_manifest(manifest: Path, columns: list[str]) -> None:
    if not manifest.is_file():
        raise PrepareError(f"{manifest}: manifest not found (run `rad data import` first)")
    try:
        names = set(pq.read_schema(manifest).names)
    except (pa.ArrowInvalid, OSError) as error:
        raise PrepareError(f"{manifest}: not a readable Parquet manifest ({error})") from error
    missing = [c for c in columns if c not in names]
    if missing:
        raise PrepareError(f"{manifest}: manifest lacks column(s) {missing} (an older manifest? run `rad data import`)")


def _manifest_batches(manifest: Path, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
    """(number of the batch's first row, batch) over the manifest, cast to the manifest schema's types."""
    target = pa.schema([layout.manifest_schema().field(c) for c in columns])
    start = 0
    for batch in pq.ParquetFile(manifest).iter_batches(batch_size=_MANIFEST_BATCH_ROWS, columns=columns):
        try:
            table = pa.Table.from_batches([batch]).select(columns).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise PrepareError(
                f"{manifest}: rows {start}-{start + batch.num_rows - 1}: bad column type ({error})"
            ) from error
        yield start, table
        start += batch.num_rows


def _numbered(start: int, table: pa.Table) -> pa.Table:
    return table.append_column("_row", pa.array(np.arange(start, start + table.num_rows, dtype=np.int64)))


def _rows(table: pa.Table) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in table.to_pylist():
        yield row.pop("_row"), row


# ---------------------------------------------------------------------------------------------- the run


class _Run:
    """State of one prepare run: where things are, the config, the writers and the progress bar."""

    def __init__(
        self, root: Path, manifest: Path, shards: _ShardSet, cfg: PrepareConfig, bar: tqdm, quarantined: set[str]
    ) -> None:
        self.root, self.manifest, self.shards, self.cfg, self.bar = root, manifest, shards, cfg, bar
        self.columns = _required_columns(cfg)
        self.quarantined = pa.array(sorted(quarantined), pa.string())

    def write_rows(self, table: pa.Table) -> None:
        """Read the files of the rows of `table` (numbered), check, convert and store each row.

        Rows come in the order of `read_rows`: each package read once, front to back. The table stays in
        Arrow (compact) and a row becomes a Python dict when its files are in.
        """
        files = self._locations(table)
        for position, data in read_rows(self.root, files):
            number, row = next(_rows(table.slice(position, 1)))
            where = _where(self.manifest, number, row)
            if isinstance(data, Exception):
                raise located(data, where) from data
            out = {name: row[name] for name in META_COLUMNS}
            out[SOURCE_COLUMN] = self.root.name
            for kind in self.cfg.modalities():
                out[kind], resized = png_for(data[kind], kind, f"{where}: {files[position][kind]}", self.cfg)
                self.shards.resized += resized
            self.shards.add(out, where)

    def _locations(self, table: pa.Table) -> list[dict[str, Location]]:
        """Per row, where each stored modality lies; a row without one of them is an error naming it."""
        kinds = self.cfg.modalities()
        columns = {c: table[c].to_pylist() for kind in kinds for c in (kind, layout.member_column(kind))}
        rows = []
        for k in range(table.num_rows):
            missing = [kind for kind in kinds if columns[kind][k] is None]
            if missing:
                raise self._no_file(table, k, missing[0])
            rows.append({kind: Location(columns[kind][k], columns[layout.member_column(kind)][k]) for kind in kinds})
        return rows

    def _no_file(self, table: pa.Table, k: int, kind: str) -> PrepareError:
        number, row = next(_rows(table.slice(k, 1)))
        flag = f"set data.prepare.include_{kind}: false (or --no-include-{kind})"
        hint = f"; {flag} to leave {kind} maps out" if kind in ("depth", "saliency") else ""
        return PrepareError(f"{_where(self.manifest, number, row)}: the manifest names no {kind} file{hint}")

    def select(self, table: pa.Table) -> pa.Table:
        """The rows of the selected splits that validation did not quarantine; the others are counted as skipped
        or quarantined. A row without split is an error."""
        bad = pc.is_in(table["id"], value_set=self.quarantined)
        self.shards.quarantined += pc.sum(bad).as_py() or 0
        self.bar.update(table.num_rows)
        table = table.filter(pc.invert(bad))
        no_split = table.filter(pc.is_null(table["split"]))
        if no_split.num_rows:
            number, row = next(_rows(no_split))
            raise PrepareError(f"{_where(self.manifest, number, row)}: the row has no split")
        selected = pc.is_in(table["split"], value_set=pa.array(self.cfg.splits))
        for split in table.filter(pc.invert(selected))["split"].to_pylist():
            self.shards.skipped[split] = self.shards.skipped.get(split, 0) + 1
        return table.filter(selected)

    def plain_rows(self) -> list[str]:
        """Write the rows whose files are all plain, in manifest order; return the packages the others need."""
        packages: set[str] = set()
        for start, table in _manifest_batches(self.manifest, self.columns):
            package = _package_of(table, self.cfg.modalities())
            packages.update(pc.unique(package).drop_null().to_pylist())
            self.write_rows(self.select(_numbered(start, table).filter(pc.is_null(package))))
        return sorted(packages)

    def package_rows(self, package: str) -> None:
        """Write the rows whose first file in a package lies in `package`, about `package_batch_rows` at a
        time, in the package's member order (see `read_rows`)."""
        parts: list[pa.Table] = []
        size = 0
        for start, table in _manifest_batches(self.manifest, self.columns):
            mine = pc.fill_null(pc.equal(_package_of(table, self.cfg.modalities()), package), False)
            parts.append(self.select(_numbered(start, table).filter(mine)))
            size += parts[-1].num_rows
            if size >= self.cfg.package_batch_rows:
                self.write_rows(pa.concat_tables(parts))
                parts, size = [], 0
        if size:
            self.write_rows(pa.concat_tables(parts))


def prepare_shards(
    root: Path,
    manifest: Path,
    out: Path,
    cfg: PrepareConfig | None = None,
    more: Sequence[tuple[Path, Path]] = (),
    validation: Path | None = None,
) -> PrepareSummary:
    """Pack the manifest's rows (files read from `root`) into shards in `out`, replacing it only on success.

    `more` adds further (root, manifest) sources, e.g. the ingested human-feedback batches (validated as they
    were ingested); ids must be unique over all sources. `validation`: the folder of `rad data validate`'s
    verdict on `manifest`, whose quarantined rows are left out and counted.
    """
    cfg = cfg or PrepareConfig()
    sources = [(root, manifest), *more]
    for _, source_manifest in sources:
        _check_manifest(source_manifest, _required_columns(cfg))
    try:
        quarantined = quarantined_ids(validation, manifest) if validation is not None else set()
    except (OSError, ValueError) as error:
        raise PrepareError(str(error)) from error
    rows_in = sum(pq.ParquetFile(m).metadata.num_rows for _, m in sources)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        shards = _ShardSet(tmp, cfg)
        with tqdm(total=rows_in, desc="prepare", unit="row") as bar:
            for number, (source_root, source_manifest) in enumerate(sources):
                run = _Run(source_root, source_manifest, shards, cfg, bar, quarantined if number == 0 else set())
                for package in run.plain_rows():
                    run.package_rows(package)
        shards.close()
        index = _index([m for _, m in sources], rows_in, shards, cfg)
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, out)
    seconds = time.perf_counter() - started
    written = {split: w.rows for split, w in shards.writers.items()}
    return PrepareSummary(
        out=str(out),
        rows_in=rows_in,
        rows_written=written,
        rows_skipped=dict(sorted(shards.skipped.items())),
        rows_quarantined=shards.quarantined,
        validation=str(validation) if validation is not None else None,
        shards=sum(len(w.shards) for w in shards.writers.values()),
        resized=shards.resized,
        seconds=round(seconds, 2),
        rows_per_s=round(sum(written.values()) / max(seconds, 1e-9), 1),
    )


def _index(manifests: list[Path], rows_in: int, shards: _ShardSet, cfg: PrepareConfig) -> dict[str, Any]:
    """index.json: everything a reader needs without opening a shard. No paths or times, so it is reproducible."""
    described = [
        {"file": m.name, "sha256": sha256_of(m), "rows": pq.ParquetFile(m).metadata.num_rows} for m in manifests
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "manifests": described,
        "rows_in": rows_in,
        "image_size": cfg.image_size,
        "modalities": list(cfg.modalities()),
        "columns": shard_schema(cfg.modalities()).names,
        "config": cfg.model_dump(mode="json"),
        "maps": {m: getattr(cfg, f"{m}_maps") for m in ("depth", "saliency") if m in cfg.modalities()},
        "resized": shards.resized,
        "skipped": dict(sorted(shards.skipped.items())),
        "quarantined": shards.quarantined,
        "rows": {split: writer.rows for split, writer in shards.writers.items()},
        "label_counts": {split: dict(sorted(writer.labels.items())) for split, writer in shards.writers.items()},
        "splits": {split: writer.describe() for split, writer in shards.writers.items()},
    }


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp`; the old output is removed only after the new one is in place."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
