"""Datasets: synthesise, import, validate, prepare."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import write_json
from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.data.validate import ValidationResult

VALIDATION_DIR = "validation"  # a dataset's validation reports, unless told otherwise: ROOT/validation


def synth(params: Params, out: Path, workers: int = 1, archives: int = 0, force: bool = False) -> dict[str, Any]:
    """Render RF1M-synth (`data.synth`) into `out` in RF1M's layout, optionally packed into zip packages."""
    from reliable_ad.data.synth.writer import write_synth

    summary = write_synth(params.data.synth, out, workers=workers, archives=archives, overwrite=force)
    return {k: summary[k] for k in ("n", "samples_per_s", "labels", "splits")}


def import_dataset(
    params: Params, root: Path, manifest: Path | None = None, summary: Path | None = None
) -> dict[str, Any]:
    """Read a dataset in the RF1M layout into one manifest (default ROOT/manifest.parquet); the summary also goes
    to `summary` (DVC metrics) when given."""
    from reliable_ad.data.rf1m import import_dataset as run

    result = run(root, params.data.import_, manifest).model_dump(mode="json")
    write_json(summary, result)
    return result


def validate(
    params: Params, root: Path, manifest: Path | None = None, out_dir: Path | None = None, metrics: Path | None = None
) -> ValidationResult:
    """Validate a dataset into `out_dir` (default ROOT/validation); the headline counts go to `metrics` (DVC)."""
    from reliable_ad.data.validate import validate_dataset

    result = validate_dataset(root, params.data.validate_, out_dir or root / VALIDATION_DIR, manifest)
    counts = ("success", "rows_in", "rows_accepted", "rows_quarantined", "seconds")
    write_json(metrics, {k: getattr(result, k) for k in counts})
    return result


def prepare(
    params: Params,
    root: Path,
    manifest: Path | None,
    feedback: Sequence[Path],
    out: Path,
    validation: Path | None = None,
) -> dict[str, Any]:
    """Shards of a dataset plus every feedback dataset given (each with its manifest). The rows that validation
    quarantined are left out: `validation` is its reports folder, by default ROOT/validation where it holds a
    verdict."""
    from reliable_ad.data.layout import MANIFEST_FILE
    from reliable_ad.data.shards import prepare_shards
    from reliable_ad.data.validate import VERDICT_FILE

    more = [(folder, folder / MANIFEST_FILE) for folder in feedback]
    if validation is None and (root / VALIDATION_DIR / VERDICT_FILE).exists():
        validation = root / VALIDATION_DIR
    summary = prepare_shards(
        root, manifest or root / MANIFEST_FILE, out, params.data.prepare, more=more, validation=validation
    )
    return dict(summary.model_dump(mode="json"))
