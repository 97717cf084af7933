"""Human feedback intake: a batch of new labels joins the dataset as a new version, or nothing happens.

A batch is a folder in the RF1M layout (label.txt, metadata.jsonl, images, products). Ingesting it:

1. hashes its content; a batch already in the ledger adds nothing;
2. imports it and validates it with the same expectation suite as the main dataset, except the class shares: a
   batch holds whatever reviewers were shown (generated images of suitable products are never "unsuitable"),
   balance is a property of the whole dataset. One policy: a bad row (a bad label line, a missing or unreadable
   file, an id already in the dataset) is quarantined with its line and reason and the rest goes on; a batch that
   fails as a batch (a product both in test and in train, a label outside the label set) changes nothing. Either
   way the report and every quarantined row (``rejects.jsonl``) stay under ``reports/``;
3. computes the depth and saliency maps of each accepted image with the configured extractors (reviewers
   send images, not maps), packs the accepted rows into one package ``batch-<hash>.zip`` and appends them
   to the feedback dataset's label.txt and metadata.jsonl;
4. re-imports the whole feedback folder into its manifest and swaps the new folder in; the old one is
   removed only after the new one is in place. ``dvc add`` then records the new version.

A row whose metadata names an earlier row in ``supersedes`` (a corrected label: `rad review pull` writes one
when an annotation was edited after it was pulled) replaces it: the earlier row leaves label.txt and
metadata.jsonl in the same swap (its files stay in their package, unread), so the label changes without a
duplicate, and the earlier DVC version still holds the old one.

The feedback folder is itself an RF1M-layout dataset, so `rad data import` can always rebuild its manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, ValidationConfig
from reliable_ad.data.hashing import folder_hash
from reliable_ad.data.imageio import decode, encode_png, to_rgb
from reliable_ad.data.maps import extractor
from reliable_ad.data.rf1m import first_rejects, import_dataset
from reliable_ad.data.sources import Location, location_of, read_rows
from reliable_ad.data.validate import ValidationResult, validate_dataset
from reliable_ad.errors import InputError

LEDGER = "ingested.jsonl"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip member timestamps: the same batch always gives the same bytes


class FeedbackError(InputError):
    """A batch that cannot be ingested (missing folder, failed validation...)."""


class IngestResult(BaseModel):
    batch: str
    batch_hash: str
    status: str  # "ingested", "already ingested" or "rejected"
    reason: str | None = None  # why the batch was rejected as a whole
    rows_in: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0  # rows_in = rows_accepted + rows_quarantined
    quarantined: list[str] = Field(default_factory=list)  # the first rows quarantined, as `first_rejects` prints
    rejects: str | None = None  # every row quarantined, with its line, stage and reason
    rows_superseded: int = 0  # earlier rows the batch's corrections replaced
    report: str | None = None
    dataset_rows: int = 0


def init_feedback(dataset: Path) -> None:
    """An empty feedback dataset (label.txt, metadata.jsonl, manifest, ledger); files already there are kept."""
    dataset.mkdir(parents=True, exist_ok=True)
    for name in (layout.LABEL_FILE, layout.METADATA_FILE, LEDGER):
        (dataset / name).touch()
    manifest = dataset / layout.MANIFEST_FILE
    if not manifest.exists():
        pq.write_table(layout.manifest_schema().empty_table(), manifest)


def ledger(dataset: Path) -> list[dict[str, Any]]:
    path = dataset / LEDGER
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ingest(
    batch: Path,
    dataset: Path,
    import_cfg: ImportConfig,
    validation_cfg: ValidationConfig,
    reports: Path,
    depth_maps: str = "ground",
    saliency_maps: str = "frequency_tuned",
    dvc_add: bool = False,
) -> IngestResult:
    """Ingest one feedback batch into the feedback dataset `dataset` (see the module docstring)."""
    if not batch.is_dir():
        raise FeedbackError(f"feedback batch {batch} does not exist or is not a folder")
    if dvc_add and not any((folder / ".dvc").is_dir() for folder in dataset.resolve().parents):
        raise FeedbackError(f"cannot `dvc add` {dataset}: it is not inside a DVC repository (run `dvc init`)")
    if not (dataset / layout.LABEL_FILE).exists():
        init_feedback(dataset)
    _recover(dataset)
    digest = folder_hash(batch)
    if any(entry["batch_hash"] == digest for entry in ledger(dataset)):
        return IngestResult(batch=str(batch), batch_hash=digest, status="already ingested", dataset_rows=_rows(dataset))
    report = reports / f"batch-{digest[:12]}"
    shutil.rmtree(report, ignore_errors=True)
    manifest = report / "import" / layout.MANIFEST_FILE
    imported = import_dataset(batch, import_cfg.model_copy(update={"quarantine": True}), manifest)
    rows_only = {"class_share": (0.0, 1.0), "class_share_bounds": {}, "max_quarantined_share": 1.0}
    checked = validate_dataset(batch, validation_cfg.model_copy(update=rows_only), report / "validation", manifest)
    known = _known_ids(dataset)
    accepted, rejects = _sort_rows(pq.read_table(manifest).to_pylist(), imported.rejects, report, known)
    if len(accepted) + len(rejects) != imported.rows_in:
        raise RuntimeError(f"row count broken: {imported.rows_in} in, {len(accepted)} accepted, {len(rejects)} not")
    result = IngestResult(
        batch=str(batch),
        batch_hash=digest,
        status="rejected",
        rows_in=imported.rows_in,
        rows_quarantined=imported.rows_in,
        quarantined=first_rejects(rejects),
        rejects=str(report / layout.REJECTS_FILE),
        report=str(report),
        dataset_rows=len(known),
    )
    if not checked.success:
        result.reason = _batch_failures(checked, report)
        return result
    if not accepted:
        result.reason = f"every row is quarantined (all in {result.rejects})"
        return result
    result.rows_accepted, result.rows_quarantined = len(accepted), len(rejects)
    metadata = {m["image"]: m for m in _metadata(batch)}
    superseded = {str(metadata.get(_file_name(row), {}).get("supersedes")) for row in accepted} & known
    result.rows_superseded = len(superseded)
    staged = _stage(dataset, batch, accepted, metadata, superseded, digest, depth_maps, saliency_maps, result)
    import_dataset(staged, import_cfg, staged / layout.MANIFEST_FILE)
    _swap(staged, dataset)
    result.status = "ingested"
    result.dataset_rows = _rows(dataset)
    if dvc_add:
        subprocess.run(["dvc", "add", "-q", str(dataset)], check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return result


def _rows(dataset: Path) -> int:
    manifest = dataset / layout.MANIFEST_FILE
    return pq.ParquetFile(manifest).metadata.num_rows if manifest.exists() else 0


def _known_ids(dataset: Path) -> set[str]:
    manifest = dataset / layout.MANIFEST_FILE
    return set(pq.read_table(manifest, columns=["id"]).column("id").to_pylist()) if manifest.exists() else set()


def _sort_rows(
    rows: list[dict[str, Any]], import_rejects: str | None, report: Path, known: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows accepted, rows quarantined) of a batch: the import's bad lines, the rows whose files failed the
    file pass and the ids already in the dataset are quarantined, each with its label.txt line, stage and
    reason; all of them go to report/rejects.jsonl in line order."""
    rejects = [
        {"line": r["line"], "id": None, "stage": "import", "reason": r["reason"]} for r in _jsonl(import_rejects)
    ]
    bad_files = {r["id"]: r["reason"] for r in _jsonl(report / "validation" / layout.REJECTS_FILE)}
    accepted = []
    for row in rows:
        reason, stage = bad_files.get(row["id"]), "validation"
        if reason is None and row["id"] in known:
            reason, stage = "id already in the feedback dataset", "clash"
        if reason is None:
            accepted.append(row)
        else:
            rejects.append({"line": row["source_line"], "id": row["id"], "stage": stage, "reason": reason})
    rejects.sort(key=lambda r: r["line"])
    (report / layout.REJECTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rejects))
    return accepted, rejects


def _jsonl(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _batch_failures(checked: ValidationResult, report: Path) -> str:
    """Why a batch fails as a batch: each failed expectation with a failing row, where it has one."""
    failed = [
        o.description + (f": {o.unexpected_count} row(s), e.g. {o.examples[0]}" if o.examples else "")
        for o in checked.expectations
        if not o.success
    ]
    return f"failed as a batch: {'; '.join(failed)} (see {report / 'validation' / 'summary.txt'})"


def _file_name(row: dict[str, Any]) -> str:
    """The file name of a row's image, the key of its metadata entry."""
    return Path(row["image_member"] or row["image"]).name


def _stage(
    dataset: Path,
    batch: Path,
    rows: list[dict[str, Any]],
    metadata: dict[str, dict[str, Any]],
    superseded: set[str],
    digest: str,
    depth_maps: str,
    saliency_maps: str,
    result: IngestResult,
) -> Path:
    """A copy of the feedback folder with the batch appended and the superseded rows dropped (packages are hard
    links: no data copied)."""
    staged = dataset.parent / f".{dataset.name}.staged"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for path in dataset.iterdir():
        if path.is_file() and path.name != layout.MANIFEST_FILE:
            if layout.is_archive(path.name):
                os.link(path, staged / path.name)
            else:
                shutil.copy2(path, staged / path.name)
    _drop_rows(staged, superseded)
    depth, saliency = extractor("depth", depth_maps), extractor("saliency", saliency_maps)
    package = staged / f"batch-{digest[:12]}.zip"
    locations = [_located(row) for row in rows]
    with (
        zipfile.ZipFile(package, "w", zipfile.ZIP_STORED) as archive,
        (staged / layout.LABEL_FILE).open("a") as labels,
        (staged / layout.METADATA_FILE).open("a") as meta,
    ):
        for position, data in read_rows(batch, locations):
            if isinstance(data, Exception):
                raise FeedbackError(f"{batch}: {data}") from data
            row = rows[position]
            name = f"{row['id']}.png"
            image = to_rgb(decode(data["image"], f"{batch}: {row['id']} image"))
            members = {
                f"{layout.IMAGES_DIR}/{name}": encode_png(image),
                f"{layout.PRODUCTS_DIR}/{name}": _as_png(data["product"]),
                f"{layout.DEPTH_DIR}/{name}": encode_png(depth(image)),
                f"{layout.SALIENCY_DIR}/{name}": encode_png(saliency(image)),
            }
            for member, payload in members.items():
                archive.writestr(zipfile.ZipInfo(member, FIXED_TIME), payload)
            labels.write(f"{name}\t{row['label_id']}\n")
            entry = dict(metadata.get(_file_name(row), {}))
            entry.update(
                image=name,
                product_id=row["product_id"],
                prompt=row["prompt"],
                title=row["title"],
                split=row["split"],
                category=row["category"],
                height_cm=row["height_cm"],
            )
            meta.write(json.dumps(entry) + "\n")
    with (staged / LEDGER).open("a") as handle:
        handle.write(
            json.dumps(
                {
                    "batch_hash": digest,
                    "batch": str(batch),
                    "package": package.name,
                    "rows_in": result.rows_in,
                    "rows_accepted": result.rows_accepted,
                    "rows_quarantined": result.rows_quarantined,
                    "rows_superseded": result.rows_superseded,
                    "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
            + "\n"
        )
    return staged


def _drop_rows(dataset: Path, ids: set[str]) -> None:
    """Remove the rows of `ids` from label.txt and metadata.jsonl (the files this module writes, one row a line)."""
    if not ids:
        return
    labels, meta = dataset / layout.LABEL_FILE, dataset / layout.METADATA_FILE
    kept = [line for line in labels.read_text().splitlines() if Path(line.split("\t", 1)[0]).stem not in ids]
    labels.write_text("".join(line + "\n" for line in kept))
    entries = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    meta.write_text("".join(json.dumps(e) + "\n" for e in entries if Path(e["image"]).stem not in ids))


def _located(row: dict[str, Any]) -> dict[str, Location]:
    found = {kind: location_of(row, kind) for kind in ("image", "product")}
    missing = [kind for kind, where in found.items() if where is None]
    if missing:
        raise FeedbackError(f"row {row['id']} (label.txt line {row['source_line']}) has no {missing[0]} file")
    return {kind: where for kind, where in found.items() if where is not None}


def _as_png(data: bytes) -> bytes:
    """Product bytes as PNG, keeping the alpha channel (or its absence) as it came."""
    image = decode(data, "product")
    return encode_png(np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")))


def _metadata(batch: Path) -> list[dict[str, Any]]:
    path = batch / layout.METADATA_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _swap(staged: Path, dataset: Path) -> None:
    old = dataset.parent / f".{dataset.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    dataset.rename(old)
    staged.rename(dataset)
    shutil.rmtree(old, ignore_errors=True)


def _recover(dataset: Path) -> None:
    """Finish or undo a swap that was interrupted between its two renames."""
    old = dataset.parent / f".{dataset.name}.old"
    if old.exists() and not dataset.exists():
        old.rename(dataset)
    shutil.rmtree(dataset.parent / f".{dataset.name}.staged", ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
