"""Prefect flows of ReliableAD. Thin: every task calls the package's API, as the DVC stages do.

- `full_pipeline`: synth -> import -> validate -> (with a generator: its images labelled by the reviewer,
  RF1M-gen) -> prepare -> train RFNet -> evaluate -> gate, then (with a generator) recurrent-generation
  evaluation, RFFT, its evaluation and gate.
- `retrain_on_feedback`: ingest a new feedback batch -> new data version -> prepare -> retrain RFNet
  warm-started from the champion -> gate -> re-evaluate the generator under the new judge -> optionally
  RFFT -> gate.
- `evaluate_generation_sharded`: recurrent generation over a large product set split into shards that run
  as separate task runs and merge into one result.

Tasks that talk to the tracking server retry on transient failures (connection refused, timeouts); tasks
that meet bad data fail at once: retrying cannot fix a bad label file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped

from reliable_ad.api import RoundData, round_controlnet, round_finished, round_judge, round_of_batch
from reliable_ad.params import Params, load_params

GENERATED = Path("data/rf1m-gen")  # the generator's images labelled by the reviewer (`rad feedback simulate`)
ROUND_DATA = RoundData(
    Path("data/rf1m-synth"),
    Path("data/manifest/manifest.parquet"),
    (Path("data/feedback"), GENERATED),
    Path("data/rounds"),
    Path("reports/rounds"),
)
TRANSIENT_MARKERS = ("Connection refused", "Max retries exceeded", "timed out", "Temporary failure", "503", "502")


def is_transient(error: BaseException | None) -> bool:
    """Network trouble: worth a retry. Everything else (bad data, bad config, bugs) is not."""
    if error is None:
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return any(marker in str(error) for marker in TRANSIENT_MARKERS)


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
    from reliable_ad.data.synth.writer import write_synth

    summary = write_synth(params.data.synth, out, workers=2, archives=8, overwrite=True)
    return {k: summary[k] for k in ("n", "labels", "splits")}


@task
def import_data(params: Params, root: Path, manifest: Path) -> dict[str, Any]:
    from reliable_ad.data.rf1m import import_dataset

    return dict(import_dataset(root, params.data.import_, manifest).model_dump(mode="json"))


@task
def validate(params: Params, root: Path, manifest: Path, reports: Path) -> dict[str, Any]:
    from reliable_ad.api import validate as run

    result = run(params, root, manifest, reports, Path("metrics/validation.json"))
    if not result.success:
        raise ValueError(f"validation of {root} failed:\n{result.summary}")
    return {"rows_in": result.rows_in, "rows_accepted": result.rows_accepted}


@task
def simulate_feedback(params: Params, generator: Path, dataset: Path) -> dict[str, Any]:
    from reliable_ad.api import simulate_feedback as run

    shutil.rmtree(dataset, ignore_errors=True)  # made afresh from the generator, as the DVC stage makes it
    return run(params, generator, dataset, Path("reports/feedback"), progress=False)


@task
def prepare(params: Params, root: Path, manifest: Path, feedback: list[Path], out: Path) -> dict[str, Any]:
    """Shards of the main dataset plus each feedback dataset that exists (with its manifest)."""
    from reliable_ad.data.shards import prepare_shards

    more = [(folder, folder / "manifest.parquet") for folder in feedback if (folder / "manifest.parquet").exists()]
    return dict(prepare_shards(root, manifest, out, params.data.prepare, more=more).model_dump(mode="json"))


@task
def train_rfnet(params: Params, shards: Path, out: Path, init_from: Path | None = None) -> Path:
    from reliable_ad.training.rfnet import train_rfnet as run

    # each flow run trains afresh, as the DVC stage does: an earlier run's checkpoints (other data, another
    # warm start) must not be resumed; `rad rfnet train` without --fresh resumes a run killed mid-way
    run(params.rfnet.train, shards, out, init_from=init_from, resume=False)
    return out / "model"


@task
def evaluate_rfnet(model: Path, shards: Path, metrics: Path, plots: Path) -> dict[str, Any]:
    from reliable_ad.training.rfnet_eval import evaluate_rfnet as run

    result = run(model, shards, metrics, plots)
    return {k: result[k] for k in ("macro_f1", "accuracy", "ap_available", "ece")}


@task(**TRACKING)
def register_rfnet(params: Params, model: Path, shards: Path, decision: Path) -> dict[str, Any]:
    from reliable_ad.registry.rfnet import register_rfnet as run

    return dict(run(model, shards, params.rfnet.gate, decision_file=decision).__dict__)


@task(**TRACKING)
def champion_folder(name: str) -> Path | None:
    """The champion's files, or None when the registry has no champion yet."""
    from reliable_ad.registry.models import CHAMPION, by_alias, download_model
    from reliable_ad.registry.tracking import setup

    setup("reliable-ad")
    return download_model(f"{name}@{CHAMPION}") if by_alias(name, CHAMPION) else None


@task
def evaluate_generation(
    params: Params, generator: Path, controlnet: Path | None, judge: str, rfft_controlnet: Path | None = None
) -> dict[str, Any]:
    from reliable_ad.api import evaluate_generation as run

    result = run(
        params,
        generator,
        controlnet,
        judge,
        Path("metrics/generation.json"),
        Path("plots/generation"),
        Path("reports/generation/attempts.parquet"),
        rfft_controlnet=rfft_controlnet,
        probes=Path("models/probes"),
    )
    return {k: v for k, v in result.items() if k != "runs"}


@task
def rfft(params: Params, generator: Path, judge: str, out: Path) -> Path:
    from reliable_ad.api import rfft_train

    rfft_train(params, generator, judge, out)
    return out / "controlnet"


@task(**TRACKING)
def register_controlnet(params: Params, controlnet: Path, generator: Path, judge: str) -> dict[str, Any]:
    from reliable_ad.api import register_controlnet as run

    return run(params, controlnet, generator, judge, Path("metrics/rfft_gate.json"))


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
    from reliable_ad.api import feedback_round as run

    return run(params, k, generator, judge, controlnet, ROUND_DATA, out, ingested=ingested, tune=tune, progress=False)


@task
def ingest_feedback(params: Params, batch: Path, dataset: Path) -> dict[str, Any]:
    from reliable_ad.api import ingest_feedback as run

    result = run(params, batch, dataset, Path("reports/feedback"))
    if result.status == "rejected":
        raise ValueError(f"feedback batch {batch} failed validation; report: {result.report}")
    return dict(result.model_dump())


@task
def dvc_add(path: Path) -> str:
    """Record a new version of a DVC-tracked folder; returns its DVC hash ('untracked' outside a DVC repo)."""
    from reliable_ad.registry.tracking import dvc_hash

    if not Path(".dvc").is_dir():
        return "untracked"
    subprocess.run(["dvc", "add", "-q", str(path)], check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return dvc_hash(path)


@task
def generation_shard(
    params: Params, generator: Path, controlnet: Path | None, judge: str, shard: int, shards: int, products: int
) -> list[dict[str, Any]]:
    """One shard of a large recurrent-generation run: its slice of the products, every attempt returned."""
    from reliable_ad.api import denoiser_from, judge_from
    from reliable_ad.generation.evaluate import held_out_products
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.recurrent import recurrent_generate

    per = -(-products // shards)
    start, count = shard * per, max(0, min(per, products - shard * per))
    cfg = params.generation.evaluate
    items = held_out_products(count, cfg.product_seed, cfg.categories, offset=start)
    stats = recurrent_generate(
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        items,
        load_prompt_pool(params.generation.prompts),
        cfg.recurrent,
        progress=False,
    )
    return [a.row() for a in stats.attempts]


# ------------------------------------------------------------------------------------------------- flows


ROUNDS = Path("models/rounds")  # the pipeline's rounds (what `rad rounds run` writes)
RETRAINED = Path("models/retrained")  # rounds started by new human feedback


@flow(name="full-pipeline", log_prints=True)
def full_pipeline(params_path: str = "params.yaml", generator: str | None = None, run_rfft: bool = True) -> dict:
    """The whole pipeline of the embedded default (what `dvc repro` runs), as one Prefect flow."""
    params = load_params(Path(params_path))
    root, manifest = Path("data/rf1m-synth"), Path("data/manifest/manifest.parquet")
    summary: dict[str, Any] = {"synth": synth(params, root)}
    summary["import"] = import_data(params, root, manifest)
    summary["validate"] = validate(params, root, manifest, Path("reports/validation"))
    feedback = [Path("data/feedback")]
    if generator:
        summary["simulate_feedback"] = simulate_feedback(params, Path(generator), GENERATED)
        feedback.append(GENERATED)
    summary["prepare"] = prepare(params, root, manifest, feedback, Path("data/shards"))
    model = train_rfnet(params, Path("data/shards"), Path("models/rfnet"))
    summary["rfnet"] = evaluate_rfnet(model, Path("data/shards"), Path("metrics/rfnet.json"), Path("plots/rfnet"))
    summary["rfnet_gate"] = register_rfnet(params, model, Path("data/shards"), Path("metrics/rfnet_gate.json"))
    if generator:
        tuned = rfft(params, Path(generator), str(model), Path("models/rfft")) if run_rfft else None
        summary["generation"] = evaluate_generation(params, Path(generator), None, str(model), tuned)
        if tuned is not None:
            summary["rfft_gate"] = register_controlnet(params, tuned, Path(generator), str(model))
            judge, controlnet = model, tuned
            for k in range(1, params.rounds.count + 1):
                summary[f"round_{k}"] = feedback_round(params, k, Path(generator), judge, controlnet, ROUNDS)
                judge, controlnet = round_judge(ROUNDS, k), round_controlnet(ROUNDS, k)
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
    feedback = Path("data/feedback")
    tune = bool(generator and run_rfft)
    summary: dict[str, Any] = {"ingest": ingest_feedback(params, Path(batch), feedback)}
    k = round_of_batch(feedback, summary["ingest"]["batch_hash"])  # a rerun of the same batch resumes its round
    if summary["ingest"]["status"] == "already ingested" and not ingested and round_finished(RETRAINED, k, tune):
        logger.info("batch %s was ingested and its round %d finished before: nothing to retrain", batch, k)
        return summary
    summary["data_version"] = dvc_add(feedback)
    judge = champion_folder("rfnet")
    if judge is None:
        raise ValueError("no rfnet champion to warm-start from: run the full pipeline (or `rad rfnet register`) first")
    model = Path(generator or "models/tiny-generator/model")  # not read when nothing is tuned
    controlnet = (champion_folder("reliable-controlnet") if tune else None) or model / "controlnet"
    summary["round"] = feedback_round(params, k, model, judge, controlnet, RETRAINED, summary["ingest"], tune=tune)
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
    """Recurrent generation over `products` held-out products in `shards` mapped task runs, merged."""
    import numpy as np

    params = load_params(Path(params_path))
    cn = Path(controlnet) if controlnet else None
    futures = generation_shard.map(
        unmapped(params),
        unmapped(Path(generator)),
        unmapped(cn),
        unmapped(judge),
        list(range(shards)),
        unmapped(shards),
        unmapped(products),
    )
    rows = [row for future in futures for row in future.result()]
    firsts = [r for r in rows if r["attempt"] == 1]
    accepted = {r["product"] for r in rows if r["status"] == "accepted"}
    return {
        "products": products,
        "shards": shards,
        "attempts": len(rows),
        "available_rate_first_rfnet": sum(r["status"] == "accepted" for r in firsts) / max(1, products),
        "available_rate_first_reviewer": float(np.mean([r["reviewer_label"] == "available" for r in firsts])),
        "final_available_rate": len(accepted) / max(1, products),
    }
