"""Validate an imported dataset: a file pass over the images, then a Great Expectations suite on the manifest.

The file pass opens every generated image, product and map (in worker processes; packages read in place, each
once, front to back) and quarantines the rows whose files are missing, corrupt, too large, of the wrong mode or
size, or whose product has no usable background. The suite then checks the manifest as a whole: unique ids, known labels
and splits, files present and readable, no product both in test and in train/val, class shares in bounds.

Outputs in the output folder: validation.json (every expectation's result and the row counts, with rows in =
accepted + quarantined), rejects.jsonl (one line per quarantined row), summary.txt (the same, readable) and
GX Data Docs under data_docs/. Great Expectations takes seconds to import, so `run_expectations` imports it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, Field

from reliable_ad.data import layout
from reliable_ad.data.config import ValidationConfig
from reliable_ad.data.cutout import ProductImageError, ensure_alpha
from reliable_ad.data.hashing import sha256_of
from reliable_ad.data.imageio import ImageDecodeError, decode
from reliable_ad.data.rf1m import FileIndex
from reliable_ad.data.sources import Location, location_of, read_rows
from reliable_ad.errors import InputError

PLAIN_CHUNK = 256  # rows of plain files per worker task; a package is one task (read front to back once)
FILE_COLUMNS = ("files_exist", "files_valid")  # set by the file checks when they run
OPTIONAL_KINDS = ("depth", "saliency")  # files a row may lack
VERDICT_FILE = "validation.json"


class ExpectationOutcome(BaseModel):
    """One expectation's result, as validation.json and summary.txt report it."""

    expectation: str
    column: str | None
    description: str
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = Field(default_factory=list)


class FilePassStats(BaseModel):
    """Throughput of the file pass; one image = a generated image with its product and maps."""

    images: int
    seconds: float
    images_per_s: float
    workers: int


class ValidationResult(BaseModel):
    """The outcome of `validate_dataset`; `success` is False when any expectation failed."""

    manifest_sha256: str  # the manifest judged: a verdict applies to it only
    success: bool
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    expectations: list[ExpectationOutcome]
    file_pass: FilePassStats | None
    quarantine_examples: list[str]  # the first few "id: reason"
    seconds: dict[str, float]
    summary: str
    out_dir: str
    data_docs: str | None


def validate_dataset(
    root: Path, cfg: ValidationConfig, out_dir: Path, manifest: Path | None = None
) -> ValidationResult:
    """Validate the dataset in `root` (its manifest, default root/manifest.parquet) into `out_dir`."""
    timer = _Timer()
    manifest = manifest or root / layout.MANIFEST_FILE
    frame = load_manifest(manifest)
    timer.lap("load")
    rejects: dict[int, str] = {}
    file_pass = None
    if cfg.check_files:
        exists, missing = files_exist(frame, FileIndex(root))
        frame["files_exist"] = exists
        rejects.update(missing)
        timer.lap("files_exist")
        if cfg.check_images:
            bad, file_pass = check_images(root, frame[exists], cfg)
            rejects.update(bad)
            frame["files_valid"] = exists & ~frame.index.isin(list(bad))
            timer.lap("file_pass")
    checked = checked_frame(frame, cfg.labels)
    timer.lap("columns")
    outcomes, docs = run_expectations(checked, cfg, out_dir)
    timer.lap("expectations")

    accepted = int((~frame.index.isin(list(rejects))).sum())
    if accepted + len(rejects) != len(frame):
        raise RuntimeError(f"row count broken: {len(frame)} in, {accepted} accepted, {len(rejects)} quarantined")
    result = ValidationResult(
        manifest_sha256=sha256_of(manifest),
        success=all(o.success for o in outcomes),
        rows_in=len(frame),
        rows_accepted=accepted,
        rows_quarantined=len(rejects),
        expectations=outcomes,
        file_pass=file_pass,
        quarantine_examples=[f"{frame['id'].iat[i]}: {rejects[i]}" for i in sorted(rejects)[:5]],
        seconds=timer.laps,
        summary="",
        out_dir=str(out_dir),
        data_docs=str(docs) if docs else None,
    )
    result.summary = summarise(result, manifest)
    _write_outputs(out_dir, result, frame, rejects, cfg)
    return result


def quarantined_ids(out_dir: Path, manifest: Path) -> set[str]:
    """The ids of the rows a validation written to `out_dir` quarantined, for later stages to leave out. A
    verdict on another manifest (imported again since) is refused: its ids no longer describe this one."""
    report = out_dir / VERDICT_FILE
    if not report.is_file():
        raise FileNotFoundError(f"{out_dir}: no {VERDICT_FILE}; run `rad data validate` with --out-dir {out_dir}")
    judged = json.loads(report.read_text()).get("manifest_sha256")
    if judged != sha256_of(manifest):
        raise InputError(
            f"{report} is the verdict on another manifest than {manifest} (imported again since?): "
            f"run `rad data validate` again"
        )
    lines = (out_dir / layout.REJECTS_FILE).read_text().splitlines()
    return {json.loads(line)["id"] for line in lines if line.strip()}


def load_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run `rad data import` first")
    table = pq.read_table(path)
    missing = [name for name in layout.manifest_schema().names if name not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: not a manifest, columns missing: {missing} (an older manifest? run `rad data import`)"
        )
    return table.to_pandas()


def files_exist(frame: pd.DataFrame, files: FileIndex) -> tuple[pd.Series, dict[int, str]]:
    """Per row: are its image, product and maps there (files, or members of the named package)? And a
    reason where not."""
    missing = pd.DataFrame(index=frame.index)
    for kind in layout.FILE_KINDS:
        optional = kind in OPTIONAL_KINDS
        there = [
            _is_there(files, path, member, optional)
            for path, member in zip(frame[kind], frame[layout.member_column(kind)], strict=True)
        ]
        missing[kind] = ~np.asarray(there, bool)
    reasons = {}
    for index in frame.index[missing.any(axis=1)]:
        row = frame.loc[index].to_dict()
        paths = [_missing_path(row, kind) for kind in layout.FILE_KINDS if missing.at[index, kind]]
        reasons[index] = f"missing file(s): {', '.join(paths)}"
    return ~missing.any(axis=1), reasons


def _is_there(files: FileIndex, path: Any, member: Any, optional: bool) -> bool:
    if not isinstance(path, str):
        return optional
    if isinstance(member, str):
        return member in files.packages.get(path, ())
    return files.has_file(path)


def _missing_path(row: dict[str, Any], kind: str) -> str:
    """How a missing file is named in a reason: package:member for package members, and why a path is unsafe."""
    location = location_of(row, kind)
    if location is None:
        return f"<no {kind}>"
    if location.member is None:
        try:
            layout.safe_relative(location.path, kind)
        except layout.UnsafePath as error:
            return f"{location} ({error})"
    return str(location)


class _FileRow(NamedTuple):
    row: int  # index in the manifest frame
    files: dict[str, Location]  # kind -> where the file lies (the maps only where the row has them)


@dataclass(frozen=True)
class _FileTask:
    root: Path
    cfg: ValidationConfig
    rows: list[_FileRow]  # rows whose first packaged file lies in one package, or rows of plain files only


def check_images(root: Path, frame: pd.DataFrame, cfg: ValidationConfig) -> tuple[dict[int, str], FilePassStats]:
    """Decode and check every file of every row, in `cfg.workers` processes; (row index -> reason) for the
    rows that fail."""
    tasks = _file_tasks(root, frame, cfg)
    started = time.perf_counter()
    if cfg.workers == 1:
        results = list(map(_check_task, tasks))
    else:
        # spawn: the parent may hold pyarrow threads, which a fork would copy in an unknown state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=context) as pool:
            results = list(pool.map(_check_task, tasks))
    failures = {index: reason for result in results for index, reason in result}
    seconds = time.perf_counter() - started
    stats = FilePassStats(
        images=len(frame),
        seconds=round(seconds, 3),
        images_per_s=round(len(frame) / max(seconds, 1e-9), 1),
        workers=cfg.workers,
    )
    return failures, stats


def _file_tasks(root: Path, frame: pd.DataFrame, cfg: ValidationConfig) -> list[_FileTask]:
    """One task per package, with the rows whose first packaged file lies in it (`read_rows` reads each package
    they need once), then chunks of rows with plain files only."""
    columns = [c for kind in layout.FILE_KINDS for c in (kind, layout.member_column(kind))]
    by_package: dict[str, list[_FileRow]] = {}
    plain = []
    for index, record in zip(frame.index, frame[columns].to_dict("records"), strict=True):
        files = {kind: loc for kind in layout.FILE_KINDS if (loc := location_of(record, kind)) is not None}
        row = _FileRow(int(index), files)
        package = next((loc.package for loc in files.values() if loc.package is not None), None)
        if package is None:
            plain.append(row)
        else:
            by_package.setdefault(package, []).append(row)
    tasks = [_FileTask(root, cfg, rows) for rows in by_package.values()]
    tasks += [_FileTask(root, cfg, plain[i : i + PLAIN_CHUNK]) for i in range(0, len(plain), PLAIN_CHUNK)]
    return tasks


def _check_task(task: _FileTask) -> list[tuple[int, str]]:
    """(row index, reason) for the rows of one task whose files cannot be read or fail a check."""
    failures = []
    for position, data in read_rows(task.root, [row.files for row in task.rows]):
        row = task.rows[position]
        reason = str(data) if isinstance(data, Exception) else _check_row(row, data, task.cfg)
        if reason is not None:
            failures.append((row.row, reason))
    return failures


def _check_row(row: _FileRow, data: dict[str, bytes], cfg: ValidationConfig) -> str | None:
    """The reason this row's files are unusable, or None."""
    source = {kind: str(location) for kind, location in row.files.items()}
    missing = [kind for kind in ("image", "product") if kind not in data]
    if missing:
        return f"the manifest names no {' and no '.join(missing)}"
    try:
        image = decode(data["image"], source["image"], cfg.max_pixels)
        _check_mode(image, cfg.image_modes, source["image"])
        _check_size(image, cfg, source["image"])
        product = decode(data["product"], source["product"], cfg.max_pixels)
        _check_mode(product, cfg.product_modes, source["product"])
        if product.size != image.size:
            raise ImageDecodeError(
                f"{source['product']}: size {_wxh(product)} differs from the generated image's {_wxh(image)}"
            )
        ensure_alpha(np.asarray(product), source["product"], cfg.white_tolerance, "data.validate.white_tolerance")
        for kind in OPTIONAL_KINDS:
            if kind in data:
                decode(data[kind], source[kind], cfg.max_pixels)
    except (ImageDecodeError, ProductImageError, OSError) as error:
        return str(error)
    return None


def _check_mode(image: Image.Image, modes: list[str], source: str) -> None:
    if image.mode not in modes:
        raise ImageDecodeError(f"{source}: mode {image.mode} is not one of {modes}")


def _check_size(image: Image.Image, cfg: ValidationConfig, source: str) -> None:
    if not all(cfg.min_size <= side <= cfg.max_size for side in image.size):
        raise ImageDecodeError(f"{source}: size {_wxh(image)} outside [{cfg.min_size}, {cfg.max_size}] px per side")


def _wxh(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"


def checked_frame(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The columns the suite checks, and only those (GX fingerprints the whole frame it is given):
    the manifest's ids, labels and splits; whether a row's product is both in test and in train/val; and per
    label a column that is 1 on that label's rows and null elsewhere, whose non-null share is the class share.
    """
    checked = frame[["id", "product_id", "label", "split", *(c for c in FILE_COLUMNS if c in frame)]].copy()
    products, split = pa.array(frame["product_id"]), pa.array(frame["split"])  # pyarrow: pandas' isin is slow here
    in_test = pc.is_in(products, value_set=products.filter(pc.equal(split, "test")))
    elsewhere = pc.is_in(products, value_set=products.filter(pc.is_in(split, pa.array(["train", "val"]))))
    checked["product_test_leak"] = pc.and_(in_test, elsewhere).to_numpy(zero_copy_only=False)
    for label in labels:
        checked[f"share_{label}"] = np.where(frame["label"] == label, 1.0, np.nan)
    return checked


def build_suite(cfg: ValidationConfig, columns: list[str]) -> list[Any]:
    """The manifest-level expectations, each with a description that Data Docs and summary.txt show."""
    import great_expectations.expectations as gxe

    tolerated = 1.0 - cfg.max_quarantined_share
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="the manifest has rows"),
        gxe.ExpectColumnValuesToNotBeNull(column="id", description="every row has an id"),
        gxe.ExpectColumnValuesToBeUnique(column="id", description="ids are unique"),
        gxe.ExpectColumnValuesToNotBeNull(column="label", description="every row has a label"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=cfg.labels, description="labels in the label set"),
        gxe.ExpectColumnValuesToNotBeNull(column="split", description="every row has a split"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(layout.SPLITS), description="known splits"),
        gxe.ExpectColumnValuesToNotBeNull(column="product_id", description="every row has a product id"),
        gxe.ExpectColumnValuesToBeInSet(
            column="product_test_leak", value_set=[False], description="no product both in test and in train/val"
        ),
    ]
    for label in cfg.labels:
        low, high = cfg.share_bounds(label)
        expectations.append(
            gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(
                column=f"share_{label}",
                min_value=low,
                max_value=high,
                description=f"share of {label} in [{low}, {high}]",
            )
        )
    if "files_exist" in columns:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="files_exist", value_set=[True], mostly=tolerated, description="referenced files exist"
            )
        )
    if "files_valid" in columns:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="files_valid", value_set=[True], mostly=tolerated, description="files decode and pass checks"
            )
        )
    return expectations


def run_expectations(
    frame: pd.DataFrame, cfg: ValidationConfig, out_dir: Path
) -> tuple[list[ExpectationOutcome], Path | None]:
    """Run the suite through a GX Checkpoint (ephemeral context); Data Docs go to out_dir/data_docs."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    docs_dir = out_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    context.variables.data_docs_sites = (
        {"rf1m": {"class_name": "SiteBuilder", "store_backend": _docs_backend(docs_dir)}} if cfg.data_docs else {}
    )
    batch = context.data_sources.add_pandas("rf1m").add_dataframe_asset("manifest")
    suite = context.suites.add(gx.ExpectationSuite(name="manifest", expectations=build_suite(cfg, list(frame.columns))))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="manifest", data=batch.add_batch_definition_whole_dataframe("all"), suite=suite)
    )
    actions: list[Any] = (
        [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["rf1m"])] if cfg.data_docs else []
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="rf1m",
            validation_definitions=[definition],
            actions=actions,
            # no unexpected_index_column_names: GX would look them up row by row for every failing row
            result_format={"result_format": "SUMMARY"},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    outcomes = [_outcome(r, frame) for validation in run.run_results.values() for r in validation.results]
    index = docs_dir / "index.html"
    return outcomes, index if cfg.data_docs and index.is_file() else None


def _docs_backend(base: Path) -> dict[str, str]:
    # absolute: GX refuses a relative base_directory without a project root (dvc.yaml passes relative paths)
    return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(base.resolve())}


def _outcome(result: Any, frame: pd.DataFrame) -> ExpectationOutcome:
    """One expectation's result; up to 5 failing rows as examples (id, product id and the checked value)."""
    config, details = result.expectation_config, result.result
    column = config.kwargs.get("column")
    shown = ["id", "product_id", *([column] if column else [])]
    rows = details.get("partial_unexpected_index_list", [])[:5]
    examples = [{k: _plain(v) for k, v in frame.loc[row, shown].items()} for row in rows]
    return ExpectationOutcome(
        expectation=config.type,
        column=column,
        description=config.description or config.type,
        success=bool(result.success),
        observed=_plain(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        examples=examples,
    )


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def summarise(result: ValidationResult, manifest: Path) -> str:
    failed = [o for o in result.expectations if not o.success]
    lines = [
        f"validation of {manifest}: {'PASSED' if result.success else 'FAILED'}",
        f"rows: {result.rows_in} in, {result.rows_accepted} accepted, {result.rows_quarantined} quarantined",
    ]
    if result.file_pass is not None:
        stats = result.file_pass
        lines.append(
            f"file pass: {stats.images} images (with products and maps) in {stats.seconds:.1f} s "
            f"({stats.images_per_s:.0f} images/s, {stats.workers} worker(s))"
        )
    lines.append(f"expectations: {len(result.expectations) - len(failed)} of {len(result.expectations)} passed")
    for outcome in result.expectations:
        line = f"  {'ok  ' if outcome.success else 'FAIL'}  {outcome.description}"
        if outcome.unexpected_count:
            line += f": {outcome.unexpected_count} row(s) ({outcome.unexpected_percent:.2f}%)"
            if outcome.examples:
                line += f", e.g. {outcome.examples[0]}"
        elif isinstance(outcome.observed, float):
            line += f" (observed {outcome.observed:.4g})"
        lines.append(line)
    if result.quarantine_examples:
        lines.append(f"quarantined, e.g. (all in {layout.REJECTS_FILE}):")
        lines += [f"  {example}" for example in result.quarantine_examples]
    return "\n".join(lines) + "\n"


def _write_outputs(
    out_dir: Path, result: ValidationResult, frame: pd.DataFrame, rejects: dict[int, str], cfg: ValidationConfig
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"config": cfg.model_dump(mode="json"), **result.model_dump(mode="json", exclude={"summary"})}
    (out_dir / VERDICT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    with (out_dir / layout.REJECTS_FILE).open("w") as handle:
        for index in sorted(rejects):
            row = frame.loc[index]
            record = {"id": row["id"], "source_line": _plain(row["source_line"]), "reason": rejects[index]}
            handle.write(json.dumps(record) + "\n")
    (out_dir / "summary.txt").write_text(result.summary)


class _Timer:
    """Seconds per phase."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now
