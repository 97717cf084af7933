"""The glue the CLI, the DVC stages (through the CLI) and the Prefect flows share, so none holds logic the
others cannot reach: each function takes the typed params and paths and returns a JSON-able summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reliable_ad.params import Params

FEEDBACK_EVENT = "reliable-ad.feedback.batch"  # what the retrain-on-feedback deployment listens for


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def judge_from(spec: str | Path) -> Any:
    """A judge from an RFNet folder, or from the registry when given as name@alias (e.g. rfnet@champion)."""
    from reliable_ad.judge import Judge

    text = str(spec)
    return Judge.from_registry(text) if "@" in text and not Path(text).exists() else Judge.from_path(text)


def denoiser_from(generator: Path, controlnet: Path | None, params: Params, for_evaluation: bool = True) -> Any:
    """A slot denoiser of the generator (with another ControlNet if given), set up as recurrent generation runs."""
    from reliable_ad.generation.denoise import Denoiser

    cfg = params.generation.evaluate.recurrent if for_evaluation else params.generation.recurrent
    return Denoiser.from_folders(generator, controlnet, cfg)


def validate(params: Params, root: Path, manifest: Path | None, out_dir: Path, metrics: Path | None) -> Any:
    """Validate a dataset; the headline counts go to `metrics` (DVC metrics)."""
    from reliable_ad.data.validate import validate_dataset

    result = validate_dataset(root, params.data.validate_, out_dir, manifest)
    counts = ("success", "rows_in", "rows_accepted", "rows_quarantined", "seconds")
    write_json(metrics, {k: getattr(result, k) for k in counts})
    return result


def evaluate_generation(
    params: Params,
    generator: Path,
    controlnet: Path | None,
    judge: str | Path,
    metrics: Path,
    plots: Path,
    records: Path,
    experiment: str = "reliable-ad",
) -> dict[str, Any]:
    """Evaluate recurrent generation into `metrics`, `plots` and `records` (DVC), and log the same as the MLflow
    run "evaluate-generation" with the settings and the models' folder hashes; adds its `mlflow_run_id`."""
    from reliable_ad.generation.evaluate import evaluate_generation as run
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.tracking import flat_params, log_run, model_lineage

    p = params.generation
    result = run(
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        metrics,
        plots,
        records,
    )
    models = {"generator": generator, "controlnet": controlnet or generator / "controlnet", "judge": judge}
    run_id = log_run(
        "evaluate-generation",
        result,
        flat_params(p.evaluate.model_dump(mode="json")) | {"prompts": str(p.prompts)},
        model_lineage(models),
        {"plots": plots, "records": records, "metrics": metrics},
        experiment,
    )
    return {**result, "mlflow_run_id": run_id}


def ingest_feedback(params: Params, batch: Path, dataset: Path, reports: Path, dvc_add: bool = False) -> Any:
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


def simulate_feedback(
    params: Params, generator: Path, dataset: Path, reports: Path, progress: bool = True
) -> dict[str, Any]:
    """RF1M-gen: the generator's images of new products, labelled by the reviewer, ingested into `dataset` as a
    feedback batch (validated, maps computed, own manifest) so `rad data prepare --feedback` can add them."""
    import tempfile

    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.simulated_feedback import simulate_feedback as run

    p = params.generation
    dataset.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dataset.parent, prefix=f".{dataset.name}.batch-") as batch:
        counts = run(
            denoiser_from(generator, None, params),
            load_prompt_pool(p.prompts),
            params.data.generated,
            params.data.synth,
            Path(batch),
            batch_size=p.evaluate.recurrent.batch_size,
            progress=progress,
        )
        if params.review.simulated_feedback == "label_studio":
            return {"labels": counts, **review_simulated(params, Path(batch), dataset, reports)}
        result = ingest_feedback(params, Path(batch), dataset, reports)
    return {"labels": counts, **result.model_dump(exclude={"batch"})}


def review_simulated(params: Params, batch: Path, dataset: Path, reports: Path, server: Any = None) -> dict[str, Any]:
    """A labelled batch through Label Studio instead of straight in: the batch pushed as a queue, every task
    answered by the simulated annotator, pulled and ingested into `dataset`. The server is `server` (a
    `LocalServer` serving files below the batch), else one started for the run from `review.server`."""
    import tempfile
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


def _comparison_key(params: Params, generator: Path, controlnet: Path, judge: str | Path) -> str | None:
    """The key of a base-vs-tuned comparison; None when the judge is a registry alias (it can move)."""
    from reliable_ad.generation.rfft_eval import comparison_key

    if not Path(judge).is_dir():
        return None
    p = params.generation
    return comparison_key(generator, controlnet, Path(judge), p.evaluate, p.guard, p.gate.resamples, p.gate.confidence)


def compare_generators(
    params: Params, generator: Path, controlnet: Path, judge: str | Path, metrics: Path | None, grid: Path | None
) -> dict[str, Any]:
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.rfft_eval import compare_generators as run

    p = params.generation
    return run(
        denoiser_from(generator, None, params),
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        p.guard,
        metrics,
        grid,
        resamples=p.gate.resamples,
        confidence=p.gate.confidence,
        key=_comparison_key(params, generator, controlnet, judge),
    )


def rfft_train(params: Params, generator: Path, judge: str | Path, out: Path, resume: bool = True) -> dict[str, Any]:
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.training.rfft import rfft_train as run

    p = params.generation
    return run(p.rfft, generator, judge_from(judge), load_prompt_pool(p.prompts), out, resume=resume)


def register_controlnet(
    params: Params,
    controlnet: Path,
    generator: Path,
    judge: str | Path,
    decision: Path | None,
    comparison: Path | None = None,
) -> dict[str, Any]:
    """Register and gate a tuned ControlNet; `comparison` is `rad rfft evaluate`'s metrics file, reused when
    it compared the same generator, ControlNet and judge under the same settings."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.controlnet import register_controlnet as run

    p = params.generation
    result = run(
        controlnet,
        generator,
        judge_from(judge),
        str(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        p.guard,
        p.gate,
        decision_file=decision,
        earlier=json.loads(comparison.read_text()) if comparison is not None and comparison.exists() else None,
        key=_comparison_key(params, generator, controlnet, judge),
    )
    return dict(result.__dict__)


def announce_feedback(batch: Path, ingested: bool = False) -> dict[str, Any]:
    """Tell the Prefect server a feedback batch arrived (the retrain-on-feedback deployment listens); `ingested`
    says its sender ingested it already (`rad review pull`), so the flow retrains on it all the same."""
    import os
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
        payload={"batch": str(batch.resolve()), "batch_hash": digest, "ingested": ingested},
    )
    EventsWorker.drain_all()  # deliver before the process ends
    return {"event": FEEDBACK_EVENT, "server": api, "batch_hash": digest}


def review_client(params: Params, url: str | None = None) -> Any:
    """A client of the configured Label Studio server; the token comes from the environment only."""
    from reliable_ad.review.client import LabelStudio

    return LabelStudio.from_config(params.review, url)


def judge_version(spec: str | Path) -> str:
    """What a judge is called in Label Studio's predictions: its registry name@alias, or its folder's hash."""
    from reliable_ad.data.hashing import folder_hash

    return f"rfnet-{folder_hash(Path(spec))[:12]}" if Path(spec).is_dir() else str(spec)


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
        judge=judge_from(judge) if judge is not None else None,
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
    experiment: str = "reliable-ad",
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
            "review-pull", figures, flat_params(params.review.model_dump(mode="json")), tags, artifacts, experiment
        )
    if announce:
        summary["announced"] = announce_feedback(Path(pulled.batch), ingested=True)
    return summary
