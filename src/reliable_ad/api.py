"""The glue the CLI, the DVC stages (through the CLI) and the Prefect flows share, so none holds logic the
others cannot reach: each function takes the typed params and paths and returns a JSON-able summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliable_ad.generation.config import RecurrentConfig, SimulatedFeedbackConfig
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
    rfft_controlnet: Path | None = None,
    probes: Path | None = None,
) -> dict[str, Any]:
    """Evaluate recurrent generation into `metrics`, `plots` and `records` (DVC), and log the same as the MLflow
    run "evaluate-generation" with the settings and the models' folder hashes; adds its `mlflow_run_id`. With
    `rfft_controlnet` the tuned generator runs the same schedulers; each generator's probe goes to `probes`."""
    from reliable_ad.generation.cost import Candidate
    from reliable_ad.generation.evaluate import evaluate_generation as run
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.tracking import flat_params, log_run, model_lineage

    p = params.generation
    judge_ = judge_from(judge)
    tuned = None
    if rfft_controlnet is not None:
        tuned = Candidate(
            "rfft_",
            denoiser_from(generator, rfft_controlnet, params),
            model_versions(generator, rfft_controlnet, judge_),
        )
    result = run(
        denoiser_from(generator, controlnet, params),
        judge_,
        load_prompt_pool(p.prompts),
        p.evaluate,
        metrics,
        plots,
        records,
        model_versions(generator, controlnet, judge_),
        probes,
        tuned,
    )
    models = {"generator": generator, "controlnet": controlnet or generator / "controlnet", "judge": judge}
    outputs = {"plots": plots, "records": records, "metrics": metrics}
    if rfft_controlnet is not None:
        models["rfft_controlnet"] = rfft_controlnet
    if probes is not None:
        outputs["probes"] = probes
    run_id = log_run(
        "evaluate-generation",
        result,
        flat_params(p.evaluate.model_dump(mode="json")) | {"prompts": str(p.prompts)},
        model_lineage(models),
        outputs,
        experiment,
    )
    return {**result, "mlflow_run_id": run_id}


def model_versions(generator: Path, controlnet: Path | None, judge: Any) -> Any:
    """What a probe belongs to: the folder hashes of the generator, the ControlNet used and the judge."""
    from reliable_ad.data.hashing import folder_hash
    from reliable_ad.generation.probe import ModelVersions

    if judge.source is None:
        raise ValueError("the judge was not loaded from a folder: a probe for it could not name its version")
    return ModelVersions(
        folder_hash(generator), folder_hash(controlnet or generator / "controlnet"), folder_hash(judge.source)
    )


def probe_for(
    folder: Path, generator: Path, controlnet: Path | None, judge: Any, cfg: RecurrentConfig
) -> tuple[RecurrentConfig, Any]:
    """A saved probe, refused unless it was trained for these models and this schedule, and `cfg` with the
    early check calibrated with it switched on."""
    from reliable_ad.generation.probe import Probe, ProbeError

    probe = Probe.load(folder)
    probe.check(model_versions(generator, controlnet, judge), cfg.steps)
    early = probe.report.get("early")
    if not isinstance(early, dict):
        raise ProbeError(f"{folder}: its calibration found no early check within the false-abort budget")
    check = {"early_step": early["step"], "early_threshold": early["threshold"], "early_by": early["by"]}
    return cfg.model_copy(update={"early_reject": True, **check}), probe


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
    import tempfile

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
        if params.review.simulated_feedback == "label_studio":
            return {"labels": counts, **review_simulated(params, Path(batch), dataset, reports)}
        result = ingest_feedback(params, Path(batch), dataset, reports)
    return {"labels": counts, **result.model_dump(exclude={"batch"})}


def prepare(params: Params, root: Path, manifest: Path, feedback: Sequence[Path], out: Path) -> dict[str, Any]:
    """Shards of a dataset plus every feedback dataset given (each with its manifest)."""
    from reliable_ad.data.layout import MANIFEST_FILE
    from reliable_ad.data.shards import prepare_shards

    more = [(folder, folder / MANIFEST_FILE) for folder in feedback]
    return dict(prepare_shards(root, manifest, out, params.data.prepare, more=more).model_dump(mode="json"))


def train_rfnet(
    params: Params,
    shards: Path,
    out: Path,
    init_from: Path | None = None,
    resume: bool = True,
    **changes: Any,
) -> dict[str, Any]:
    """Train RFNet into `out` (`out/model`), warm-started from `init_from` if given; resumes `out/checkpoints`.
    `changes` replace settings of `rfnet.train` (e.g. the rounds' epochs and learning rate)."""
    from reliable_ad.training.rfnet import train_rfnet as run

    cfg = params.rfnet.train.model_validate({**params.rfnet.train.model_dump(), **changes})
    return run(cfg, shards, out, init_from=init_from, resume=resume)


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


def reward_from(params: Params, judge: str | Path) -> Any:
    """RFFT's reward: the judge, or with `generation.rfft.ensemble` judges beside it, their conservative ensemble."""
    from reliable_ad.judge import JudgeEnsemble

    cfg = params.generation.rfft
    main = judge_from(judge)
    if not cfg.ensemble:
        return main
    return JudgeEnsemble([main, *(judge_from(other) for other in cfg.ensemble)], cfg.combine)


def rfft_train(
    params: Params,
    generator: Path,
    judge: str | Path,
    out: Path,
    resume: bool = True,
    controlnet: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `controlnet` (default: the generator's own) into `out/controlnet`, then keep the snapshot that
    the selection's verdicts (never the training judge's) like best; the summary holds both."""
    from accelerate import PartialState

    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.training.rfft import rfft_train as run
    from reliable_ad.training.rfft_select import select_snapshot

    p = params.generation
    pool = load_prompt_pool(p.prompts)
    summary = run(p.rfft, generator, reward_from(params, judge), pool, out, controlnet=controlnet, resume=resume)
    processes = PartialState()  # under `accelerate launch` one process chooses, the others wait
    if processes.is_main_process:
        selection = select_snapshot(
            out, generator, controlnet, judge_from(judge), pool, p.evaluate.recurrent, p.rfft.select, progress
        )
        summary["selection"] = {k: v for k, v in selection.items() if k != "table"}
        write_json(out / "rfft_summary.json", summary)
    processes.wait_for_everyone()
    return summary


def register_controlnet(
    params: Params,
    controlnet: Path,
    generator: Path,
    judge: str | Path,
    decision: Path | None,
    comparison: Path | None = None,
    extra_tags: dict[str, str] | None = None,
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
        extra_tags=extra_tags,
    )
    return dict(result.__dict__)


def register_rfnet(
    params: Params,
    model: Path,
    shards: Path,
    decision: Path | None,
    plots: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register an RFNet; champion only if it beats the champion on the same test split (paired bootstrap)."""
    from reliable_ad.registry.rfnet import register_rfnet as run

    result = run(model, shards, params.rfnet.gate, decision_file=decision, plots_dir=plots, extra_tags=extra_tags)
    return dict(result.__dict__)


# ------------------------------------------------------------------------------------------ feedback rounds


class RoundError(RuntimeError):
    """A feedback round cannot go on (its batch failed validation...): later rounds do not start."""


def feedback_rounds(
    params: Params,
    generator: Path,
    judge: Path,
    controlnet: Path,
    data: RoundData,
    out: Path,
    metrics: Path | None = None,
    plots: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`rounds.count` feedback rounds after the first judge (`judge`) and RFFT (`controlnet`); each round's
    judge and ControlNet start the next. Rounds done before (same inputs and settings) are not redone.
    `plots` gets both judges' rates per round (JSON for DVC, PNG for people)."""
    rows: list[dict[str, Any]] = []
    for k in range(1, params.rounds.count + 1):
        rows.append(feedback_round(params, k, generator, judge, controlnet, data, out, progress=progress))
        judge, controlnet = round_judge(out, k), round_controlnet(out, k)
    summary = {
        "rounds": rows,
        "human_labels_method": sum(row["human_labels"]["method"] for row in rows),
        "human_labels_counting": sum(row["human_labels"]["counting"] for row in rows),
    }
    if rows:
        summary["final"] = {key: rows[-1]["comparison"][key] for key in ROUND_HEADLINE}
    write_json(metrics, summary)
    if plots is not None and rows:
        _plot_rounds(rows, plots)
    return summary


def _plot_rounds(rows: list[dict[str, Any]], folder: Path) -> None:
    """First-attempt available rates per round on the held-out products: the people's (the reviewer's, with
    the paired interval of the gain) and the round's own judge's; round 0 is the base generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]["comparison"]
    points = [{"round": 0, "reviewer": base["available_rate_first_reviewer_base"],
               "rfnet": base["available_rate_first_rfnet_base"]}]  # fmt: skip
    for row in rows:
        c = row["comparison"]
        points.append(
            {"round": row["round"], "reviewer": c["available_rate_first_reviewer_tuned"],
             "rfnet": c["available_rate_first_rfnet_tuned"]}
        )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "rounds_rates.json", {"points": points})
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [p["round"] for p in points]
    low = [0.0] + [row["comparison"]["delta"] - row["comparison"]["delta_ci_low"] for row in rows]
    high = [0.0] + [row["comparison"]["delta_ci_high"] - row["comparison"]["delta"] for row in rows]
    ax.errorbar(rounds, [p["reviewer"] for p in points], yerr=[low, high], marker="o", capsize=4,
                label="reviewer (the people), gain's 95% interval")  # fmt: skip
    ax.plot(rounds, [p["rfnet"] for p in points], "--", marker="s", label="the round's judge (RFNet)")
    ax.set(xlabel="feedback round (0: base generator)", ylabel="first-attempt available rate", ylim=(0, 1))
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "rounds_rates.png", dpi=100)
    plt.close(fig)


# the comparison figures each round reports (and the last round's are the loop's result)
ROUND_HEADLINE = (
    "available_rate_first_reviewer_base",
    "available_rate_first_reviewer_tuned",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "available_rate_first_rfnet_base",
    "available_rate_first_rfnet_tuned",
    "delta_rfnet",
    "hacking_gap_tuned",
    "guard_ok",
    "diversity_base",
    "diversity_tuned",
    "base_tuned_distance",
    "judge_auc_generated",
    "judge_precision_generated",
    "mean_attempts_base",
    "mean_attempts_tuned",
    "attempts_per_available_base",
    "attempts_per_available_tuned",
)


@dataclass(frozen=True)
class RoundData:
    """Where a round's training data comes from and goes: the main dataset, the feedback datasets every round
    trains on, and the folder of the rounds' own feedback datasets and shards."""

    root: Path
    manifest: Path
    feedback: tuple[Path, ...]
    rounds: Path
    reports: Path


def round_judge(out: Path, k: int) -> Path:
    return out / f"round-{k}" / "rfnet" / "model"


def round_controlnet(out: Path, k: int) -> Path:
    return out / f"round-{k}" / "rfft" / "controlnet"


def feedback_round(
    params: Params,
    k: int,
    generator: Path,
    judge: Path,
    controlnet: Path,
    data: RoundData,
    out: Path,
    ingested: dict[str, Any] | None = None,
    tune: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Round `k`: images of fresh training products labelled by people -> ingested as a feedback batch -> the
    judge retrained warm-started on all data -> RFFT from the current ControlNet under the new judge, the
    snapshot chosen by validation verdicts -> base vs tuned on the held-out products -> both registered and gated.

    The images people label come from the last weights of the RFFT run that made `controlnet` (its snapshots
    beside it), not from the weights selected: the last ones are what fooled the old judge most, and the new
    judge must learn exactly those mistakes. Without snapshots, `controlnet` makes them.

    People's labels arrive as a batch that was ingested into one of `data.feedback` before (`ingested`: its
    ingest result, e.g. from the retrain-on-feedback flow); in the embedded world, without one, the round
    generates the images and the reviewer labels them. Without `tune` the round ends once the new judge is
    registered.

    Each step's result is kept in the round's state.json, so a round killed half-way resumes at its step; a
    state written for other inputs or settings is cleared first."""
    from reliable_ad.data.hashing import folder_hash
    from reliable_ad.training.checkpoint import fingerprint
    from reliable_ad.training.rfft_select import last_snapshot

    cfg = params.rounds
    shown = last_snapshot(controlnet.parent) or controlnet  # the ControlNet whose images people label
    folder, round_data = out / f"round-{k}", data.rounds / f"round-{k}"
    dataset, shards = round_data / "feedback", round_data / "shards"
    earlier = [data.rounds / f"round-{i}" / "feedback" for i in range(1, k)]
    key = fingerprint(
        {
            "judge": folder_hash(judge),
            "controlnet": folder_hash(controlnet) if tune else None,
            "shown": folder_hash(shown) if ingested is None else None,
            "generator": folder_hash(generator) if tune else None,
            "batch": ingested["batch_hash"] if ingested is not None else None,
            "data": [folder_hash(f) for f in (*data.feedback, *earlier) if f.exists()],
            "params": params.model_dump(mode="json", include={"rounds", "rfnet", "generation", "data"}),
        }
    )
    state = _round_state(folder, key, [round_data])
    done: dict[str, Any] = state["done"]

    def step(name: str, result: dict[str, Any]) -> None:
        done[name] = result
        write_json(folder / "state.json", state)

    if "feedback" not in done:
        if ingested is None:
            products = SimulatedFeedbackConfig(products=cfg.products, product_seed=cfg.product_seed + k - 1, seed=k)
            fed = simulate_feedback(params, generator, dataset, data.reports / f"round-{k}", progress, shown, products)
        else:
            fed = dict(ingested)
        if fed["status"] == "rejected":
            raise RoundError(
                f"round {k}: the feedback batch {fed.get('batch') or '(generated)'} failed validation and nothing "
                f"of it was ingested ({fed.get('reason') or 'see the report'}); report: {fed['report']}"
            )
        version = (
            folder_hash(dataset)
            if dataset.exists()
            else fingerprint({"feedback": [folder_hash(f) for f in data.feedback]})
        )
        step("feedback", {**fed, "data_version": version})
    lineage = {
        "round": str(k),
        "round.data_version": done["feedback"]["data_version"],
        "round.parent.judge.folder_hash": folder_hash(judge),
    }
    if tune:
        lineage["round.parent.controlnet.folder_hash"] = folder_hash(controlnet)
    new_judge = round_judge(out, k)
    if "judge" not in done:
        sources = [f for f in (*data.feedback, *earlier, dataset) if f.exists()]
        prepared = prepare(params, data.root, data.manifest, sources, shards)
        trained = train_rfnet(
            params, shards, folder / "rfnet", init_from=judge, epochs=cfg.rfnet_epochs, lr=cfg.rfnet_lr
        )
        gate = register_rfnet(params, new_judge, shards, folder / "rfnet_gate.json", extra_tags=lineage)
        step("judge", {"shards": prepared["rows_written"], "train": trained, "gate": gate})
    row: dict[str, Any] = {
        "round": k,
        "labels": done["feedback"].get("labels"),
        "data_version": done["feedback"]["data_version"],
        "judge_threshold": done["judge"]["train"].get("calibration", {}).get("threshold"),
        "rfnet_promoted": done["judge"]["gate"]["promoted"],
        # people's time: the batch they labelled (the method's own use of them; the snapshot choice adds more)
        "human_labels": {"method": done["feedback"]["rows_in"], "counting": 0},
    }
    if not tune:
        return row
    tuned = round_controlnet(out, k)
    if "rfft" not in done:
        ran = rfft_train(params, generator, new_judge, folder / "rfft", controlnet=controlnet, progress=progress)
        step("rfft", ran)
    if "evaluate" not in done:
        compared = compare_generators(
            params, generator, tuned, new_judge, folder / "comparison.json", folder / "grid.png"
        )
        unseen = first_attempt_rates(params, generator, tuned, new_judge) if cfg.unseen_products else {}
        step("evaluate", {"comparison": compared, "unseen": unseen})
    if "gate" not in done:
        gated = register_controlnet(
            params, tuned, generator, new_judge, folder / "rfft_gate.json", folder / "comparison.json", lineage
        )
        step("gate", gated)
    selection = done["rfft"].get("selection", {})
    compared = done["evaluate"]["comparison"]
    row["human_labels"] = {
        "method": done["feedback"]["rows_in"] + selection.get("human_labels", 0),
        # counting results: every attempt the evaluation made, labelled to see what people would say of it
        "counting": compared["attempts_total_base"]
        + compared["attempts_total_tuned"]
        + 2 * done["evaluate"]["unseen"].get("products", 0),
    }
    return row | {
        "selected_step": selection.get("chosen_step"),
        "comparison": {key: compared[key] for key in ROUND_HEADLINE},
        "unseen": done["evaluate"]["unseen"],
        "controlnet_promoted": done["gate"]["promoted"],
        "controlnet_gate": done["gate"]["reason"],
    }


def round_of_batch(dataset: Path, batch_hash: str) -> int:
    """The round a human feedback batch starts: its place among the batches ingested into `dataset`."""
    from reliable_ad.data.feedback import ledger

    hashes = [entry["batch_hash"] for entry in ledger(dataset)]
    if batch_hash not in hashes:
        raise ValueError(f"batch {batch_hash[:12]} was never ingested into {dataset}")
    return 1 + hashes.index(batch_hash)


def round_finished(out: Path, k: int, tune: bool) -> bool:
    """Whether round `k` under `out` ran to its end (its judge registered, and its ControlNet when tuned)."""
    path = out / f"round-{k}" / "state.json"
    done = json.loads(path.read_text())["done"] if path.exists() else {}
    return "judge" in done and (not tune or "gate" in done)


def _round_state(folder: Path, key: str, data_folders: list[Path]) -> dict[str, Any]:
    """The round's state.json, or a new one (and no files of an earlier run) when it was written for other
    inputs or settings."""
    import shutil

    path = folder / "state.json"
    state = json.loads(path.read_text()) if path.exists() else None
    if state is not None and state.get("fingerprint") == key:
        return dict(state)
    for stale in (folder, *data_folders):
        shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True)
    return {"fingerprint": key, "done": {}}


def first_attempt_rates(params: Params, generator: Path, controlnet: Path, judge: str | Path) -> dict[str, Any]:
    """Base vs tuned first attempts on products the pipeline never saw (`rounds.unseen_*`), by both judges."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.rfft_eval import first_attempt_comparison

    cfg = params.rounds
    p = params.generation
    return first_attempt_comparison(
        denoiser_from(generator, None, params),
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        load_prompt_pool(p.prompts),
        cfg.unseen_products,
        cfg.unseen_product_seed,
        p.evaluate.recurrent,
        resamples=p.gate.resamples,
        confidence=p.gate.confidence,
    )


# the figures of each row of the regulariser ablation
ABLATION_COLUMNS = (
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "delta_rfnet",
    "hacking_gap_tuned",
    "guard_ok",
    "diversity_base",
    "diversity_tuned",
    "base_tuned_distance",
)


def regularizer_ablation(
    params: Params,
    generator: Path,
    judge: Path,
    data: RoundData,
    out: Path,
    regularizers: Sequence[str] = ("none", "kl", "cc"),
    metrics: Path | None = None,
    table: Path | None = None,
) -> dict[str, Any]:
    """The paper's regulariser ablation, rounds included: for each regulariser, RFFT from the base ControlNet
    under `judge` (round 0), its comparison with the base, then `rounds.count` feedback rounds; models under
    `out/<regulariser>`, the rounds' data under `data.rounds/<regulariser>`. Rows: one per regulariser and round;
    resumable like the rounds."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in regularizers:
        variant = params.model_copy(deep=True)
        variant.generation.rfft = variant.generation.rfft.model_validate(
            {**variant.generation.rfft.model_dump(), "regularizer": name}
        )
        folder = out / name
        rfft_train(variant, generator, judge, folder / "rfft")
        tuned = folder / "rfft" / "controlnet"
        first = compare_generators(variant, generator, tuned, judge, folder / "comparison.json", folder / "grid.png")
        round_data = RoundData(data.root, data.manifest, data.feedback, data.rounds / name, data.reports / name)
        later = feedback_rounds(variant, generator, judge, tuned, round_data, folder / "rounds")
        rows[name] = [
            {"round": 0, **{k: first[k] for k in ABLATION_COLUMNS}},
            *({"round": r["round"], **{k: r["comparison"].get(k) for k in ABLATION_COLUMNS}} for r in later["rounds"]),
        ]
    write_json(metrics, rows)
    if table is not None:
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(ablation_markdown(rows))
    return rows


def ablation_markdown(rows: dict[str, list[dict[str, Any]]]) -> str:
    """One line per regulariser and round: the reviewer's gain with its interval, the judge's, the hacking gap
    and the guard (the paper: without a regulariser backgrounds collapse)."""
    lines = [
        "| regulariser | round | reviewer Δ | 95% interval | RFNet Δ | hacking gap | guard | diversity tuned/base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        for r in results:
            ratio = r["diversity_tuned"] / r["diversity_base"] if r.get("diversity_base") else float("nan")
            lines.append(
                f"| {name} | {r['round']} | {100 * r['delta']:+.1f} | [{100 * r['delta_ci_low']:+.1f}, "
                f"{100 * r['delta_ci_high']:+.1f}] | {100 * r['delta_rfnet']:+.1f} | "
                f"{100 * r['hacking_gap_tuned']:+.1f} | {'holds' if r['guard_ok'] else 'FAILS'} | {ratio:.2f} |"
            )
    return "\n".join(lines) + "\n"


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
