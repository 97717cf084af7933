"""Human feedback: batches ingested as new data versions, the embedded world's simulated feedback, announcements
to the retrain deployment, and review in Label Studio (push the queue, pull the verdicts)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import (
    controlnet_version,
    denoiser_from,
    judge_from,
    judge_version,
    product_source,
    write_json,
)
from reliable_ad.errors import UserError
from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.data.feedback import IngestResult
    from reliable_ad.generation.config import SimulatedFeedbackConfig

FEEDBACK_EVENT = "reliable-ad.feedback.batch"  # what `announce_feedback` emits and the retrain deployment awaits


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
    from reliable_ad.generation.prompts import pool_for
    from reliable_ad.generation.simulated_feedback import simulate_feedback as run

    p = params.generation
    dataset.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dataset.parent, prefix=f".{dataset.name}.batch-") as batch:
        counts = run(
            denoiser_from(generator, controlnet, params),
            pool_for(controlnet, p.prompts),
            products or params.data.generated,
            product_source(params),
            Path(batch),
            batch_size=p.evaluate.recurrent.batch_size,
            progress=progress,
            generator=controlnet_version(generator, controlnet),
        )
        if params.review.simulated_feedback == "label_studio":
            return {"labels": counts, **review_simulated(params, Path(batch), dataset, reports)}
        result = ingest_feedback(params, Path(batch), dataset, reports)
    return {"labels": counts, **result.model_dump(exclude={"batch"})}


def prefect_server() -> str:
    """The address of the Prefect server (PREFECT_API_URL), checked to answer. Without one Prefect starts a
    temporary server of its own, which deployments, workers and events outlive: a clear refusal instead."""
    import urllib.request

    from prefect.settings import PREFECT_API_URL

    # the variable as it is now (Prefect's settings read it once, at import), else the Prefect profile's value
    api = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not api:
        raise UserError(
            "PREFECT_API_URL is not set: start a Prefect server (`prefect server start`, or `docker compose -f "
            "docker/compose.yaml up -d`) and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10).read()
    except OSError as error:
        raise UserError(
            f"the Prefect server at PREFECT_API_URL={api} does not answer ({error}): start it (`prefect server "
            "start`) or point PREFECT_API_URL at one that runs"
        ) from error
    return str(api)


def announce_feedback(batch: Path, ingested: bool = False) -> dict[str, Any]:
    """Tell the Prefect server a feedback batch arrived (the retrain-on-feedback deployment listens); `ingested`
    says its sender ingested it already (`rad review pull`), so the flow retrains on it all the same."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from reliable_ad.data.feedback import FeedbackError
    from reliable_ad.data.hashing import folder_hash

    if not batch.is_dir():
        raise FeedbackError(f"feedback batch {batch} does not exist or is not a folder")
    api = prefect_server()
    digest = folder_hash(batch)
    emit_event(
        FEEDBACK_EVENT,
        resource={"prefect.resource.id": f"reliable-ad.feedback.{digest[:12]}"},
        payload={"batch": str(batch.resolve()), "batch_hash": digest, "ingested": ingested},
    )
    EventsWorker.drain_all()  # deliver before the process ends
    return {"event": FEEDBACK_EVENT, "server": api, "batch_hash": digest}


def review_simulated(params: Params, batch: Path, dataset: Path, reports: Path, server: Any = None) -> dict[str, Any]:
    """A labelled batch through Label Studio instead of straight in: the batch pushed as a queue, every task
    answered by the simulated annotator, pulled and ingested into `dataset`. The server is `server` (a
    `LocalServer` serving files below the batch), else one started for the run from `review.server`."""
    from contextlib import nullcontext

    from reliable_ad.review.client import LabelStudio
    from reliable_ad.review.server import local_server

    with nullcontext(server) if server is not None else local_server(params.review.server, batch.parent) as served:
        update = {"document_root": served.document_root, "order": "all", "limit": None}
        run_params = params.model_copy(update={"review": params.review.model_copy(update=update)})
        cfg = run_params.review
        client = LabelStudio(served.url, served.token, cfg.retries, cfg.retry_delay_s, cfg.timeout_s)
        review_push(run_params, batch, reports, client=client)
        review_annotate(run_params, client)
        with tempfile.TemporaryDirectory(dir=batch.parent, prefix=".review-") as pulled:
            result = review_pull(run_params, dataset, Path(pulled), reports, None, track=False, client=client)
    counts = {k: result[k] for k in ("tasks_annotated", "rows", "held")}
    return {"status": result["status"], **result.get("ingest", {}), "review": counts}


def review_client(params: Params, url: str | None = None) -> Any:
    """A client of the configured Label Studio server; the token comes from the environment only."""
    from reliable_ad.review.client import LabelStudio

    return LabelStudio.from_config(params.review, url)


def review_push(
    params: Params, queue: Path, reports: Path, judge: str | Path | None = None, client: Any = None
) -> dict[str, Any]:
    """Push a review queue to Label Studio; with `judge`, RFNet judges the images that carry no verdict."""
    from reliable_ad.review.queue import push

    result = push(
        client or review_client(params),
        queue,
        params.review,
        params.rfnet.train.model.label_set,
        reports,
        judge=judge_from(params, judge) if judge is not None else None,
        judge_version=judge_version(judge) if judge is not None else "rfnet",
    )
    return result.model_dump()


def review_annotate(params: Params, client: Any = None) -> dict[str, Any]:
    """The simulated annotator answers every open task of the configured project."""
    from reliable_ad.review.annotator import annotate_open_tasks
    from reliable_ad.review.queue import find_project

    client = client or review_client(params)
    project = find_project(client, params.review.project)
    return {"project": project, "labels": annotate_open_tasks(client, project, params.review.document_root)}


def review_pull(
    params: Params,
    dataset: Path,
    batches: Path,
    reports: Path,
    metrics: Path | None,
    dvc_add: bool = False,
    announce: bool = False,
    track: bool = True,
    client: Any = None,
) -> dict[str, Any]:
    """Pull finished reviews into a batch, ingest it into `dataset`, measure the judge against the people (logged
    to MLflow as "review-pull" with `track`), and with `announce` tell the retrain-on-feedback deployment."""
    from reliable_ad.registry.tracking import flat_params, lineage, log_run
    from reliable_ad.review.agreement import judge_vs_human
    from reliable_ad.review.pull import judged, pull

    labels = params.rfnet.train.model.label_set
    pulled, rows = pull(client or review_client(params), params.review, labels, dataset, batches, reports)
    if pulled.batch is None:  # the last batch's figures stay in `metrics`
        return {**pulled.model_dump(), "status": "nothing new"}
    ingested = ingest_feedback(params, Path(pulled.batch), dataset, reports, dvc_add=dvc_add)
    summary: dict[str, Any] = {
        **pulled.model_dump(),
        "status": ingested.status,
        "ingest": ingested.model_dump(exclude={"batch"}),
        "judge": judge_vs_human(judged(rows), labels, params.review.drift_min_precision),
    }
    write_json(metrics, summary)
    if ingested.status != "ingested":
        return summary
    if track:
        figures = {**summary, **summary["judge"], **{f"annotators_{k}": v for k, v in pulled.annotators.items()}}
        figures["judge_drift"] = int(summary["judge"]["judge_drift"])
        artifacts = {"review": metrics} if metrics is not None else {}
        tags = lineage({"feedback": dataset}) | {"review.project": str(pulled.project)}
        summary["mlflow_run_id"] = log_run(
            "review-pull",
            figures,
            flat_params(params.review.model_dump(mode="json")),
            tags,
            artifacts,
            params.paths.experiment,
        )
    if announce:
        summary["announced"] = announce_feedback(Path(pulled.batch), ingested=True)
    return summary
