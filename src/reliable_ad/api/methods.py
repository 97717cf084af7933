"""People's labels reach the generator: every method learns from one labelled batch of the generator's own
images, and the reviewer counts what each made on held-out products (the paper's comparison table)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import controlnet_version, denoiser_from, judge_from, product_source, write_json
from reliable_ad.api.rfft import compare_generators
from reliable_ad.api.rounds import first_attempt_rates
from reliable_ad.errors import InputError
from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.generation.recurrent import RunStats
    from reliable_ad.training.from_labels import LabelledBatch

# each row of metrics/methods.json
METHOD_COLUMNS = (
    "reviewer_rate_base",
    "reviewer_rate_tuned",
    "reviewer_delta",
    "reviewer_delta_ci_low",
    "reviewer_delta_ci_high",
    "rfnet_delta",
    "hacking_gap",
    "guard_ok",
    "diversity_ratio",
    "attempts_per_available_base",
    "attempts_per_available_tuned",
    "unseen_reviewer_delta",
    "unseen_reviewer_delta_ci_low",
    "human_labels",
    "labels_per_point",
    "chosen_step",
)


def label_batch(params: Params, generator: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    """The embedded world's labelled batch for the methods (`generation.methods.batch`): the generator's images
    of fresh products, several per product, labelled by the reviewer; an RF1M-layout folder in `out`, replaced
    whole. A team labels its own instead (`rad review push` / `pull`) and hands that folder to `compare_methods`."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.simulated_feedback import simulate_feedback as run

    p = params.generation
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    counts = run(
        denoiser_from(generator, None, params),
        load_prompt_pool(p.prompts),
        p.methods.batch,
        product_source(params),
        staged,
        batch_size=p.evaluate.recurrent.batch_size,
        progress=progress,
        generator=controlnet_version(generator, None),
    )
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    return {"batch": str(out), "rows": sum(counts.values()), "labels": counts}


def compare_methods(
    params: Params,
    generator: Path,
    judge: Path,
    batch: Path,
    out: Path,
    metrics: Path | None = None,
    rfft: Path | None = None,
    current: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Each method of `generation.methods.methods` learns from the labelled `batch` (made by `generator`'s own
    ControlNet: another version's labels are refused), its candidate is chosen on validation products by a paired
    test against the base (step 0 unless better), then compared with the base on the evaluation's products by
    the reviewer and `judge`, and on unseen products. `rfft` (the pipeline's RFFT comparison, `rad rfft
    evaluate`'s metrics) adds RFFT's row. Models under `out/<method>`; one row per method in `metrics`.

    The method chosen on validation goes through the ControlNet gate; `out/champion` is what the pipeline goes
    on with: the registry's champion after that gate, else `current` (the ControlNet the pipeline had: RFFT's),
    else the generator's own."""
    from reliable_ad.generation.config import check_method
    from reliable_ad.training.from_labels import LabelBatchError, read_labelled_batch

    if current is not None and not (current / "config.json").exists():
        raise InputError(f"{current}: no ControlNet there (config.json) to carry on with when no method is promoted")
    cfg = params.generation.methods
    labelled = read_labelled_batch(batch, controlnet_version(generator, None))
    spent = len(labelled.available)
    runs = out / "runs"  # each weight update trained once, shared by the methods that use it ("kto", "prompts+kto")
    # what the batch cannot train (KTO without accepted images...) gets a row saying why
    refused: dict[str, str] = {}
    for weights in sorted({part for name in cfg.methods for part in check_method(name) if part != "prompts"}):
        try:
            _train(params, weights, generator, None, labelled, runs / weights, progress)
        except LabelBatchError as error:
            refused[weights] = str(error)
    rows: dict[str, dict[str, Any]] = {}
    start = _start_runs(params, generator, judge)
    for name in cfg.methods:
        why = next((refused[part] for part in check_method(name) if part in refused), None)
        if why is not None:
            rows[name] = {"refused": why}
            continue
        folder = out / name.replace("+", "-")
        learnt = learn_from_labels(
            params, name, generator, None, labelled, judge, folder, runs, progress, start["validation"]
        )
        tuned = folder / "controlnet"
        compared = compare_generators(
            params, generator, tuned, judge, folder / "comparison.json", folder / "grid.png",
            known={"base": start["evaluation"]},
        )  # fmt: skip
        unseen = (
            first_attempt_rates(params, generator, tuned, judge, known={"base": start["unseen"]})
            if params.rounds.unseen_products
            else {}
        )
        rows[name] = method_row(compared, unseen, spent + learnt["selection"]["human_labels"], learnt["chosen_step"])
        rows[name]["validation_delta"] = learnt["validation_delta"]
    gate = _register_best(params, generator, judge, out, rows)
    champion = _carry_on(params, out, gate, current or generator / "controlnet")
    if rfft is not None and rfft.exists():
        compared = json.loads(rfft.read_text())
        selection = json.loads((params.paths.rfft / "rfft_summary.json").read_text()).get("selection", {})
        labels = params.data.generated.products + selection.get("human_labels", 0)
        rows["rfft"] = method_row(compared, {}, labels, selection.get("chosen_step"))
    summary = {
        "batch": {"folder": str(batch), "rows": spent, "available": int(labelled.available.sum())},
        "methods": rows,
        "registered": gate,
        "champion": champion,
    }
    write_json(metrics, summary)
    write_json(out / "methods.json", summary)
    (out / "methods.md").write_text(methods_markdown(rows))
    summary["mlflow_run_id"] = _log_methods(params, generator, judge, batch, out, rows)
    return summary


def _log_methods(
    params: Params, generator: Path, judge: Path, batch: Path, out: Path, rows: dict[str, dict[str, Any]]
) -> str:
    """The table as the MLflow run "compare-methods": each method's figures as `<method>.<column>` metrics, the
    table and each method's before/after grid as artifacts, the models and the batch as tags."""
    from reliable_ad.registry.tracking import flat_params, lineage, log_run, model_lineage

    named = {name.replace("+", "-"): row for name, row in rows.items()}  # MLflow's names take no "+"
    figures = {f"{name}.{key}": value for name, row in named.items() for key, value in row.items()}
    grids = {f"grids/{name}": out / name / "grid.png" for name in named}
    artifacts = {"table": out / "methods.md"} | {folder: grid for folder, grid in grids.items() if grid.exists()}
    tags = lineage({"batch": batch}) | model_lineage({"generator": generator, "judge": judge})
    settings = flat_params(params.generation.methods.model_dump(mode="json"))
    return log_run("compare-methods", figures, settings, tags, artifacts, params.paths.experiment)


def _start_runs(params: Params, generator: Path, judge: Path) -> dict[str, RunStats]:
    """What the generator's own ControlNet makes on the validation, evaluation and unseen products: every method
    starts from it and is compared with it, so it is generated once (each job is seeded: the same images)."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.rfft_eval import evaluation_run, first_attempts_run
    from reliable_ad.training.rfft_select import validation_run

    p, rounds = params.generation, params.rounds
    recurrent, pool, scorer = p.evaluate.recurrent, load_prompt_pool(p.prompts), judge_from(params, judge)
    base = denoiser_from(generator, None, params)
    source = product_source(params)
    runs = {
        "validation": validation_run(
            generator, generator / "controlnet", scorer, pool, recurrent, p.methods.select, source
        ),
        "evaluation": evaluation_run(base, scorer, pool, p.evaluate, source),
    }
    if rounds.unseen_products:
        runs["unseen"] = first_attempts_run(
            base, scorer, pool, rounds.unseen_products, rounds.unseen_product_seed, recurrent, source
        )
    return runs


def learn_from_labels(
    params: Params,
    method: str,
    generator: Path,
    controlnet: Path | None,
    labelled: LabelledBatch,
    judge: Path,
    out: Path,
    runs: Path | None = None,
    progress: bool = True,
    start_run: RunStats | None = None,
) -> dict[str, Any]:
    """One method (`prompts`, `sft`, `kto`, `dpo` or a composition like `prompts+kto`) learns from `labelled`,
    starting from `controlnet` (default: the generator's own) and its pool: its weight update trains into
    `runs/<update>` (or reuses a run already there), then the candidate kept is chosen on validation products by
    a paired test against the start (`start_run`: the start's validation attempts, if made before), and lands
    in `out/controlnet` with its learnt pool beside it."""
    from reliable_ad.generation.config import check_method
    from reliable_ad.generation.prompts import POOL_FILE, pool_for, save_prompt_pool
    from reliable_ad.training.prompt_select import select_prompts
    from reliable_ad.training.rfft_select import select_snapshot, snapshots

    p = params.generation
    cfg = p.methods
    parts = check_method(method)
    weights = next((part for part in parts if part != "prompts"), None)
    start = controlnet or generator / "controlnet"
    start_pool = pool_for(start, p.prompts)
    pool, arms = start_pool, list[Any]()
    if "prompts" in parts:
        prompts = [example.prompt for example in labelled.examples]
        pool, arms = select_prompts(start_pool, prompts, labelled.available, cfg.prompts)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if arms:
        write_json(out / "arms.json", {"arms": [arm.__dict__ for arm in arms]})
    trained: dict[str, Any] = {}
    if weights is None:  # the start's weights with the learnt pool: one candidate
        candidates = [(1, start)]
    else:
        run = (runs or out / "runs") / weights
        if not (run / "controlnet").is_dir():
            trained = _train(params, weights, generator, controlnet, labelled, run, progress)
        candidates = snapshots(run) or [(cfg.tune.steps, run / "controlnet")]
    selection = select_snapshot(
        out, generator, start, judge_from(params, judge), pool, p.evaluate.recurrent, cfg.select,
        product_source(params), progress,
        start_pool=start_pool, candidates=candidates, resamples=p.gate.resamples, confidence=p.gate.confidence,
        start_run=start_run,
    )  # fmt: skip
    if selection["chosen_step"] and "prompts" in parts:
        save_prompt_pool(pool, out / "controlnet" / POOL_FILE)
    kept = next(row for row in selection["table"] if row["step"] == selection["chosen_step"])
    selection = {k: v for k, v in selection.items() if k != "table"}
    return {
        "method": method,
        "training": trained,
        "selection": selection,
        "chosen_step": selection["chosen_step"],
        "validation_delta": kept["delta_vs_step_0"],  # the kept candidate's gain on the validation products
    }


def _register_best(
    params: Params, generator: Path, judge: Path, out: Path, rows: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """Register the method that gained most on the validation products (never chosen on the evaluation's, which
    the gate counts) through the ControlNet gate; None when no method kept anything but its start."""
    from reliable_ad.api.rfft import register_controlnet

    gains = {name: row["validation_delta"] for name, row in rows.items() if row.get("chosen_step")}
    if not gains:
        return None
    best = max(gains, key=lambda name: gains[name])
    folder = out / best.replace("+", "-")
    tags = {"method": best}
    decision = register_controlnet(
        params, folder / "controlnet", generator, judge, out / "gate.json", folder / "comparison.json", tags
    )
    return {"method": best, "promoted": decision["promoted"], "reason": decision["reason"]}


def _carry_on(params: Params, out: Path, gate: dict[str, Any] | None, current: Path) -> dict[str, Any]:
    """Copy the ControlNet the pipeline goes on with to `out/champion`: the registry's champion after the
    methods' gate (the method just promoted, or a better one promoted before), else `current`; and say which,
    so the rounds' start is a folder DVC tracks rather than the registry's state."""
    from reliable_ad.api.registry import champion_folder
    from reliable_ad.registry.controlnet import REGISTERED_NAME

    registered = champion_folder(params, REGISTERED_NAME)
    source = registered if registered is not None else current
    target = out / "champion"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    method = gate["method"] if gate is not None and gate["promoted"] else None
    return {"controlnet": str(source), "from_registry": registered is not None, "promoted_now": method}


def _train(
    params: Params,
    weights: str,
    generator: Path,
    controlnet: Path | None,
    labelled: LabelledBatch,
    run: Path,
    progress: bool,
) -> dict[str, Any]:
    from reliable_ad.training.from_labels import tune_on_labels

    return tune_on_labels(params.generation.methods.tune, weights, generator, labelled, run, controlnet, progress)


def method_row(compared: dict[str, Any], unseen: dict[str, Any], labels: int, step: int | None) -> dict[str, Any]:
    """A method's figures: the reviewer's gain with its interval first, the judge's beside it, the labels spent."""
    delta = compared["delta"]
    div_base, div_tuned = compared.get("diversity_base"), compared.get("diversity_tuned")
    return {
        "reviewer_rate_base": compared["available_rate_first_reviewer_base"],
        "reviewer_rate_tuned": compared["available_rate_first_reviewer_tuned"],
        "reviewer_delta": delta,
        "reviewer_delta_ci_low": compared["delta_ci_low"],
        "reviewer_delta_ci_high": compared["delta_ci_high"],
        "rfnet_delta": compared["delta_rfnet"],
        "hacking_gap": compared["hacking_gap_tuned"],
        "guard_ok": compared["guard_ok"],
        "diversity_ratio": div_tuned / div_base if div_base and div_tuned is not None else None,
        "attempts_per_available_base": compared.get("attempts_per_available_base"),
        "attempts_per_available_tuned": compared.get("attempts_per_available_tuned"),
        "unseen_reviewer_delta": unseen.get("delta"),
        "unseen_reviewer_delta_ci_low": unseen.get("delta_ci_low"),
        "human_labels": labels,
        # people's labels per point of the reviewer's available rate gained (None: no gain)
        "labels_per_point": labels / (100 * delta) if delta > 0 else None,
        "chosen_step": step,
    }


def methods_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The comparison table, a line per method, by the reviewer first."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:+.1f}"

    lines = [
        "| method | reviewer base -> tuned | reviewer Δ [95% interval] | RFNet Δ | hacking gap | guard | unseen Δ "
        "| attempts per available | human labels | labels per point |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "refused" in r:
            lines.append(f"| {name} | refused: {r['refused']} |" + " |" * 8)
            continue
        per_point = "no gain" if r["labels_per_point"] is None else f"{r['labels_per_point']:.0f}"
        attempts = (
            f"{r['attempts_per_available_base']:.2f} -> {r['attempts_per_available_tuned']:.2f}"
            if r["attempts_per_available_base"] and r["attempts_per_available_tuned"]
            else "n/a"
        )
        lines.append(
            f"| {name} | {100 * r['reviewer_rate_base']:.1f}% -> {100 * r['reviewer_rate_tuned']:.1f}% | "
            f"{pct(r['reviewer_delta'])} [{pct(r['reviewer_delta_ci_low'])}, {pct(r['reviewer_delta_ci_high'])}] | "
            f"{pct(r['rfnet_delta'])} | {pct(r['hacking_gap'])} | {'holds' if r['guard_ok'] else 'FAILS'} | "
            f"{pct(r['unseen_reviewer_delta'])} | {attempts} | {r['human_labels']} | {per_point} |"
        )
    return "\n".join(lines) + "\n"
