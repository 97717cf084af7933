"""Datasets: synthesise, import, validate, prepare; human feedback: ingest, simulate, announce."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import denoiser_from, write_json
from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.data.feedback import IngestResult
    from reliable_ad.data.validate import ValidationResult
    from reliable_ad.generation.config import SimulatedFeedbackConfig

VALIDATION_DIR = "validation"  # a dataset's validation reports, unless told otherwise: ROOT/validation
FEEDBACK_EVENT = "reliable-ad.feedback.batch"  # what `announce_feedback` emits and the retrain deployment awaits


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


def init_feedback(dataset: Path) -> None:
    """An empty feedback dataset where there is none (an existing one is left as it is)."""
    from reliable_ad.data.feedback import init_feedback as run

    run(dataset)


def ingest_feedback(params: Params, batch: Path, dataset: Path, reports: Path, dvc_add: bool = False) -> IngestResult:
    """Validate a feedback batch and append what passes to `dataset` (maps made by the configured extractors)."""
    from reliable_ad.data.feedback import ingest

    data = params.data
    return ingest(
        batch,
        dataset,
        data.import_,
        data.validate_,
        reports,
        data.prepare.depth_maps,
        data.prepare.saliency_maps,
        dvc_add=dvc_add,
    )


def record_data_version(path: Path) -> str:
    """`dvc add` a DVC-tracked folder (a new data version) and return its DVC hash; 'untracked' outside a DVC
    repository."""
    from reliable_ad.registry.tracking import dvc_hash

    if not Path(".dvc").is_dir():
        return "untracked"
    subprocess.run(["dvc", "add", "-q", str(path)], check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return dvc_hash(path)


def simulate_feedback(
    params: Params,
    generator: Path,
    dataset: Path,
    reports: Path,
    progress: bool = True,
    controlnet: Path | None = None,
    products: SimulatedFeedbackConfig | None = None,
) -> dict[str, Any]:
    """RF1M-gen: the generator's images of new products (`products`, default `data.generated`), labelled by the
    reviewer, ingested into `dataset` as a feedback batch (validated, maps computed, own manifest) so `rad data
    prepare --feedback` can add them. A batch that fails validation changes nothing: its status says so."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.simulated_feedback import simulate_feedback as run

    p = params.generation
    dataset.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dataset.parent, prefix=f".{dataset.name}.batch-") as batch:
        counts = run(
            denoiser_from(generator, controlnet, params),
            load_prompt_pool(p.prompts),
            products or params.data.generated,
            params.data.synth,
            Path(batch),
            batch_size=p.evaluate.recurrent.batch_size,
            progress=progress,
        )
        result = ingest_feedback(params, Path(batch), dataset, reports)
    return {"labels": counts, **result.model_dump(exclude={"batch"})}


def announce_feedback(batch: Path) -> dict[str, Any]:
    """Tell the Prefect server at PREFECT_API_URL that a feedback batch arrived (the retrain-on-feedback
    deployment listens for `FEEDBACK_EVENT`); nothing is announced when the server does not answer."""
    import urllib.request

    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from reliable_ad.data.feedback import FeedbackError
    from reliable_ad.data.hashing import folder_hash

    if not batch.is_dir():
        raise FeedbackError(f"feedback batch {batch} does not exist or is not a folder")
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise RuntimeError("PREFECT_API_URL is not set: point it at the Prefect server the deployments are served on")
    try:
        urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10).read()
    except OSError as error:
        raise RuntimeError(f"the Prefect server at {api} does not answer ({error}); nothing was announced") from error
    digest = folder_hash(batch)
    emit_event(
        FEEDBACK_EVENT,
        resource={"prefect.resource.id": f"reliable-ad.feedback.{digest[:12]}"},
        payload={"batch": str(batch.resolve()), "batch_hash": digest},
    )
    EventsWorker.drain_all()  # deliver before the process ends
    return {"event": FEEDBACK_EVENT, "server": api, "batch_hash": digest}
