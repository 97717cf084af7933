"""Prefect flows of ReliableAD. Thin: every task calls one function of the API (`reliable_ad.api`), as each DVC
stage does through `rad`, and the locations come from `params.paths`, as dvc.yaml's.

- `full_pipeline`: synth -> import -> validate -> (with a generator: its images labelled by the reviewer,
  RF1M-gen) -> prepare -> train RFNet -> evaluate -> gate, then (with a generator) recurrent-generation
  evaluation, RFFT, its gate and the feedback rounds.
- `retrain_on_feedback`: ingest a new feedback batch -> new data version -> a feedback round: the judge
  retrained warm-started from the champion on all data -> gate -> optionally RFFT -> gate.
- `evaluate_generation_sharded`: recurrent generation over a large product set split into shards that run
  as separate task runs and merge into one result.
- `rfft_stage`, `evaluate_generation_stage`: the stages that need a GPU as flows of their own. With
  `orchestration.pools` on, the full pipeline runs them as flow runs of their deployments on the GPU work pool
  (`python flows/deploy.py` registers them) and reads what they wrote from the project folder, which every
  worker shares; off (the default), they run as tasks in the pipeline's own process.

Tasks that talk to the tracking server retry on transient failures (connection refused, timeouts, a 502/503
from a server); tasks that meet bad data fail at once: retrying cannot fix a bad label file.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task, unmapped

from reliable_ad import api
from reliable_ad.errors import UserError
from reliable_ad.params import Params, load_params

TRANSIENT_MARKERS = ("Connection refused", "Max retries exceeded", "timed out", "Temporary failure")
# a gateway's or server's "try again" as HTTP clients word it (MLflow: "error code 503 != 200"), never a bare
# number: sample ids such as s0-0000503 carry those digits in bad-data errors
TRANSIENT_STATUS = re.compile(
    r"\b(?:error code|status(?: code)?|HTTP(?:/[\d.]+)?)[ :=]+50[234]\b|\b50[234] (?:Bad Gateway|Service Unavailable"
    r"|Gateway Time-?out)\b",
    re.IGNORECASE,
)


def is_transient(error: BaseException | None) -> bool:
    """Network trouble: worth a retry. Everything else (bad data, bad config, bugs) is not."""
    if error is None:
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    text = str(error)
    return any(marker in text for marker in TRANSIENT_MARKERS) or TRANSIENT_STATUS.search(text) is not None


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as error:
        return is_transient(error)
    return False


TRACKING = {"retries": 3, "retry_delay_seconds": 2, "retry_condition_fn": retry_transient}


# ------------------------------------------------------------------------------------------------- tasks


@task
def synth(params: Params, out: Path) -> dict[str, Any]:
    return api.synth(params, out, workers=2, archives=8, force=True)


@task
def import_data(params: Params, root: Path, manifest: Path) -> dict[str, Any]:
    return api.import_dataset(params, root, manifest, params.paths.import_summary)


@task
def validate(params: Params, root: Path, manifest: Path) -> dict[str, Any]:
    paths = params.paths
    result = api.validate(params, root, manifest, paths.validation, paths.validation_metrics)
    if not result.success:
        raise ValueError(f"validation of {root} failed:\n{result.summary}")
    return {"rows_in": result.rows_in, "rows_accepted": result.rows_accepted}


@task
def init_feedback(dataset: Path) -> Path:
    api.init_feedback(dataset)
    return dataset


@task
def simulate_feedback(params: Params, generator: Path, dataset: Path) -> dict[str, Any]:
    shutil.rmtree(dataset, ignore_errors=True)  # made afresh from the generator, as the DVC stage makes it
    return api.simulate_feedback(params, generator, dataset, params.paths.feedback_reports, progress=False)


@task
def prepare(params: Params, root: Path, manifest: Path, feedback: list[Path], out: Path) -> dict[str, Any]:
    return api.prepare(params, root, manifest, feedback, out)


@task
def train_rfnet(params: Params, shards: Path, out: Path) -> Path:
    # each flow run trains afresh, as the DVC stage does: an earlier run's checkpoints (other data, another
    # warm start) must not be resumed; `rad rfnet train` without --fresh resumes a run killed mid-way
    api.train_rfnet(params, shards, out, resume=False)
    return out / "model"


@task
def evaluate_rfnet(params: Params, model: Path, shards: Path) -> dict[str, Any]:
    result = api.evaluate_rfnet(params, model, shards, params.paths.rfnet_metrics, params.paths.rfnet_plots)
    return {k: result[k] for k in ("macro_f1", "accuracy", "ap_available", "ece")}


@task(**TRACKING)
def register_rfnet(params: Params, model: Path, shards: Path, decision: Path) -> dict[str, Any]:
    return api.register_rfnet(params, model, shards, decision)


@task(**TRACKING)
def champion_folder(params: Params, name: str) -> Path | None:
    """The champion's files, or None when the registry has no champion yet."""
    return api.champion_folder(params, name)


@task
def evaluate_generation(params: Params, generator: Path, judge: str, rfft_controlnet: Path | None) -> dict[str, Any]:
    paths = params.paths
    result = api.evaluate_generation(
        params,
        generator,
        None,
        judge,
        paths.generation_metrics,
        paths.generation_plots,
        paths.generation_records,
        rfft_controlnet=rfft_controlnet,
        probes=paths.probes,
    )
    return {k: v for k, v in result.items() if k != "runs"}


@task
def rfft(params: Params, generator: Path, judge: str, out: Path) -> Path:
    api.rfft_train(params, generator, judge, out)
    return out / "controlnet"


@task(**TRACKING)
def register_controlnet(params: Params, controlnet: Path, generator: Path, judge: str) -> dict[str, Any]:
    return api.register_controlnet(params, controlnet, generator, judge, params.paths.rfft_gate)


@task(**TRACKING)
def feedback_round(
    params: Params,
    k: int,
    generator: Path,
    judge: Path,
    controlnet: Path,
    out: Path,
    ingested: dict[str, Any] | None = None,
    tune: bool = True,
) -> dict[str, Any]:
    """One feedback round (`rad rounds run` runs the same function): resumes at its step when retried."""
    data = api.RoundData.of(params.paths)
    return api.feedback_round(params, k, generator, judge, controlnet, data, out, ingested, tune, progress=False)


@task
def label_batch(params: Params, generator: Path) -> Path:
    """The labelled batch the methods learn from (`rad rfft batch`)."""
    api.label_batch(params, generator, params.paths.methods_batch, progress=False)
    return params.paths.methods_batch


@task
def compare_methods(params: Params, generator: Path, judge: Path, batch: Path, current: Path | None) -> dict[str, Any]:
    """Prompt selection, SFT, KTO and DPO from the labelled batch, counted by the reviewer (`rad rfft compare`);
    RFFT's row when its comparison is there; the champion (`Paths.methods_champion`) starts the rounds."""
    paths = params.paths
    return api.compare_methods(
        params, generator, judge, batch, paths.methods, paths.methods_metrics, paths.rfft_metrics, current, False
    )


@task
def ingest_feedback(params: Params, batch: Path, dataset: Path) -> dict[str, Any]:
    result = api.ingest_feedback(params, batch, dataset, params.paths.feedback_reports)
    if result.status == "rejected":
        raise ValueError(f"feedback batch {batch} failed validation; report: {result.report}")
    return dict(result.model_dump())


@task
def record_data_version(path: Path) -> str:
    """A new version of a DVC-tracked folder; its DVC hash ('untracked' outside a DVC repo)."""
    return api.record_data_version(path)


@task
def generation_shard(
    params: Params, generator: Path, controlnet: Path | None, judge: str, shard: int, shards: int, products: int
) -> dict[str, Any]:
    """One shard of a large recurrent-generation run: its slice of the products, every attempt returned."""
    return api.generation_shard(params, generator, controlnet, judge, shard, shards, products)


@task
def merge_generation_shards(params: Params, parts: list[dict[str, Any]], products: int) -> dict[str, Any]:
    return api.merge_generation_shards(params, parts, products)


# -------------------------------------------------------------------------------------------- GPU stages

GPU_DEPLOYMENT = "gpu"  # each GPU stage's deployment: "<flow name>/gpu" on orchestration.gpu_pool
POLL_S = 2.0  # how often a waiting pipeline reads its stage's state


@flow(name="rfft", log_prints=True)
def rfft_stage(params_path: str, generator: Path, judge: str, out: Path) -> None:
    """RFFT on a node of the GPU pool: the fine-tuned ControlNet lands in `out/controlnet`."""
    rfft(load_params(Path(params_path)), generator, judge, out)


@flow(name="evaluate-generation", log_prints=True)
def evaluate_generation_stage(params_path: str, generator: Path, judge: str, rfft_controlnet: Path | None) -> None:
    """Generation's evaluation on a node of the GPU pool: its summary lands in `paths.generation_metrics`."""
    evaluate_generation(load_params(Path(params_path)), generator, judge, rfft_controlnet)


def on_gpu_pool(params: Params, stage: Flow, **parameters: Any) -> dict[str, Any]:
    """Run `stage` as a flow run of its deployment on the GPU work pool and wait for it to end.

    A run that no worker takes within `orchestration.worker_wait_s` is cancelled, so a worker that joins later
    does not run a stage the pipeline has given up on, and the stage fails in one line saying how a node joins.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled

    settings = params.orchestration
    name = f"{stage.name}/{GPU_DEPLOYMENT}"
    try:
        run = run_deployment(name, parameters=parameters, timeout=0)
    except ObjectNotFound as error:
        raise UserError(
            f"the Prefect server has no deployment {name}: register the deployments with `python flows/deploy.py` "
            "(orchestration.pools on)"
        ) from error
    deadline = time.monotonic() + settings.worker_wait_s
    with get_client(sync_client=True) as client:
        while not (run.state and run.state.is_final()):
            if run.state and run.state.is_scheduled() and time.monotonic() > deadline:
                client.set_flow_run_state(run.id, Cancelled(message="no worker took it in time"), force=True)
                raise UserError(
                    f"no worker of work pool {settings.gpu_pool!r} took the {stage.name} stage within "
                    f"{settings.worker_wait_s:g} s (orchestration.worker_wait_s), so its run was cancelled: start "
                    f"one on a GPU node with `prefect worker start --pool {settings.gpu_pool}` (docs/gpu.md)"
                )
            time.sleep(POLL_S)
            run = client.read_flow_run(run.id)
    if not run.state.is_completed():
        raise RuntimeError(
            f"the {stage.name} stage ended {run.state.name} on work pool {settings.gpu_pool!r}: {run.state.message}"
        )
    return {"flow_run": str(run.id), "work_pool": run.work_pool_name}


def gpu_stages(params: Params, params_path: str, generator: Path, judge: Path, tuned: Path | None) -> dict[str, Any]:
    """RFFT into `tuned` (unless None) and generation's evaluation on the GPU pool; where each ran, and the
    evaluation's summary as it wrote it into the project folder."""
    stage = {"params_path": params_path, "generator": generator, "judge": str(judge)}
    ran = {"rfft": on_gpu_pool(params, rfft_stage, **stage, out=params.paths.rfft)} if tuned is not None else {}
    where = on_gpu_pool(params, evaluate_generation_stage, **stage, rfft_controlnet=tuned)
    written = json.loads(params.paths.generation_metrics.read_text())
    return {**ran, "generation": {**where, **{k: v for k, v in written.items() if k != "runs"}}}


# ------------------------------------------------------------------------------------------------- flows


@flow(name="full-pipeline", log_prints=True)
def full_pipeline(params_path: str = "params.yaml", generator: str | None = None, run_rfft: bool = True) -> dict:
    """The whole pipeline of the embedded default (what `dvc repro` runs), as one Prefect flow; with
    `orchestration.pools` on, RFFT and generation's evaluation run on the GPU work pool."""
    params = load_params(Path(params_path))
    paths = params.paths
    summary: dict[str, Any] = {"synth": synth(params, paths.synth)}
    summary["import"] = import_data(params, paths.synth, paths.manifest)
    summary["validate"] = validate(params, paths.synth, paths.manifest)
    feedback = [init_feedback(paths.feedback)]  # as `make run` makes it before `dvc repro`
    if generator:
        summary["simulate_feedback"] = simulate_feedback(params, Path(generator), paths.generated)
        feedback.append(paths.generated)
    summary["prepare"] = prepare(params, paths.synth, paths.manifest, feedback, paths.shards)
    model = train_rfnet(params, paths.shards, paths.rfnet)
    summary["rfnet"] = evaluate_rfnet(params, model, paths.shards)
    summary["rfnet_gate"] = register_rfnet(params, model, paths.shards, paths.rfnet_gate)
    if generator:
        if params.orchestration.pools:
            tuned = paths.rfft_controlnet if run_rfft else None
            summary |= gpu_stages(params, params_path, Path(generator), model, tuned)
        else:
            tuned = rfft(params, Path(generator), str(model), paths.rfft) if run_rfft else None
            summary["generation"] = evaluate_generation(params, Path(generator), str(model), tuned)
        if tuned is not None:
            summary["rfft_gate"] = register_controlnet(params, tuned, Path(generator), str(model))
        batch = label_batch(params, Path(generator))
        summary["methods"] = compare_methods(params, Path(generator), model, batch, tuned)
        judge, controlnet = model, paths.methods_champion
        for k in range(1, params.rounds.count + 1):
            summary[f"round_{k}"] = feedback_round(params, k, Path(generator), judge, controlnet, paths.rounds)
            judge, controlnet = api.round_judge(paths.rounds, k), api.round_controlnet(paths.rounds, k)
    return summary


@flow(name="retrain-on-feedback", log_prints=True)
def retrain_on_feedback(
    batch: str,
    params_path: str = "params.yaml",
    generator: str | None = None,
    run_rfft: bool = False,
    ingested: bool = False,
) -> dict:
    """New human labels in, a better judge (and generator) out, each only if it passes its gate. `ingested`: the
    batch's sender ingested it already (`rad review pull --announce`), so it is retrained on all the same."""
    logger = get_run_logger()
    params = load_params(Path(params_path))
    paths = params.paths
    tune = bool(generator and run_rfft)
    summary: dict[str, Any] = {"ingest": ingest_feedback(params, Path(batch), paths.feedback)}
    k = api.round_of_batch(paths.feedback, summary["ingest"]["batch_hash"])  # a rerun of the batch resumes its round
    finished = api.round_finished(paths.retrained, k, tune)
    if summary["ingest"]["status"] == "already ingested" and not ingested and finished:
        logger.info("batch %s was ingested and its round %d finished before: nothing to retrain", batch, k)
        return summary
    summary["data_version"] = record_data_version(paths.feedback)
    judge = champion_folder(params, "rfnet")
    if judge is None:
        logger.info("no rfnet champion yet: the round trains the first judge cold on all data")
    model = Path(generator) if generator else paths.generator  # not read when nothing is tuned
    controlnet = (champion_folder(params, "reliable-controlnet") if tune else None) or model / "controlnet"
    summary["round"] = feedback_round(params, k, model, judge, controlnet, paths.retrained, summary["ingest"], tune)
    return summary


@flow(name="evaluate-generation-sharded", log_prints=True)
def evaluate_generation_sharded(
    generator: str,
    judge: str,
    products: int = 256,
    shards: int = 4,
    controlnet: str | None = None,
    params_path: str = "params.yaml",
) -> dict:
    """Recurrent generation over `products` held-out products in `shards` mapped task runs, merged and summarised
    as one run is."""
    params = load_params(Path(params_path))
    futures = generation_shard.map(
        unmapped(params),
        unmapped(Path(generator)),
        unmapped(Path(controlnet) if controlnet else None),
        unmapped(judge),
        list(range(shards)),
        unmapped(shards),
        unmapped(products),
    )
    return merge_generation_shards(params, [future.result() for future in futures], products)
