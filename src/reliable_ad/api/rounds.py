"""Feedback rounds: the generator's newest images labelled by people, the judge retrained on them, the generator
updated by `rounds.method` (KTO on the round's labels by default, or RFFT under the new judge), evaluated and
gated; each round resumable at its step."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import denoiser_from, generates_the_same, judge_from, product_source, write_json
from reliable_ad.api.data import prepare
from reliable_ad.api.feedback import simulate_feedback
from reliable_ad.api.rfft import compare_generators, register_controlnet, rfft_train
from reliable_ad.api.rfnet import register_rfnet, train_rfnet
from reliable_ad.errors import InputError, UserError
from reliable_ad.generation.config import SimulatedFeedbackConfig
from reliable_ad.params import Params
from reliable_ad.paths import Paths

if TYPE_CHECKING:
    from reliable_ad.generation.recurrent import RunStats


class RoundError(UserError, RuntimeError):
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
    """`rounds.count` feedback rounds from a judge and a ControlNet (the pipeline's: its first judge and the
    methods' champion, `Paths.methods_champion`); each round's judge and ControlNet start the next. Rounds done
    before (same inputs and settings) are not redone. `plots` gets both judges' rates per round (JSON for DVC,
    PNG for people)."""
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

    @classmethod
    def of(cls, paths: Paths) -> RoundData:
        """The pipeline's: its dataset, the human feedback and RF1M-gen, the rounds' folders."""
        feedback = (paths.feedback, paths.generated)
        return cls(paths.synth, paths.manifest, feedback, paths.rounds_data, paths.rounds_reports)


def round_judge(out: Path, k: int) -> Path:
    return out / f"round-{k}" / "rfnet" / "model"


def round_controlnet(out: Path, k: int) -> Path:
    return out / f"round-{k}" / "update" / "controlnet"


def feedback_round(
    params: Params,
    k: int,
    generator: Path,
    judge: Path | None,
    controlnet: Path,
    data: RoundData,
    out: Path,
    ingested: dict[str, Any] | None = None,
    tune: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Round `k`: images of fresh training products labelled by people -> ingested as a feedback batch -> the
    judge retrained warm-started on all data -> `rounds.method` from the current ControlNet (KTO on the round's
    labelled images, or RFFT under the new judge), the candidate chosen by validation verdicts -> base vs tuned
    on the held-out products -> both registered and gated. A batch the method cannot learn from (KTO without an
    accepted image) leaves the ControlNet as it was, and the row says why.

    The images people label come from `controlnet` (on-policy). With `rounds.method: rfft` they come from the
    last weights of the RFFT run that made `controlnet` (its snapshots beside it), not from the weights
    selected: the last ones are what fooled the old judge most, and the new judge must learn exactly those
    mistakes; without snapshots, `controlnet` makes them.

    People's labels arrive as a batch that was ingested into one of `data.feedback` before (`ingested`: its
    ingest result, e.g. from the retrain-on-feedback flow); in the embedded world, without one, the round
    generates the images and the reviewer labels them. Without `tune` the round ends once the new judge is
    registered. Without a `judge` (no champion yet) the round trains the first one cold, for `rfnet.train`'s
    epochs.

    Each step's result is kept in the round's state.json, so a round killed half-way resumes at its step; a
    state written for other inputs or settings is cleared first."""
    from reliable_ad.data.hashing import folder_hash
    from reliable_ad.training.checkpoint import fingerprint
    from reliable_ad.training.from_labels import LabelBatchError
    from reliable_ad.training.rfft_select import last_snapshot

    cfg = params.rounds
    # the ControlNet whose images people label: RFFT's last weights (what fooled the old judge most); a method
    # that learns from the labels themselves learns from the current ControlNet's images (on-policy)
    shown = (last_snapshot(controlnet.parent) if cfg.method == "rfft" else None) or controlnet
    folder, round_data = out / f"round-{k}", data.rounds / f"round-{k}"
    dataset, shards = round_data / "feedback", round_data / "shards"
    earlier = [data.rounds / f"round-{i}" / "feedback" for i in range(1, k)]
    key = fingerprint(
        {
            "judge": folder_hash(judge) if judge else None,
            "controlnet": folder_hash(controlnet) if tune else None,
            "shown": folder_hash(shown) if ingested is None else None,
            "generator": folder_hash(generator) if tune else None,
            "products": product_source(params).version(),
            "batch": ingested["batch_hash"] if ingested is not None else None,
            "data": [folder_hash(f) for f in (*data.feedback, *earlier) if f.exists()],
            # how many rounds follow does not change this one: raising `rounds.count` resumes after it
            "params": params.model_dump(
                mode="json", include={"rounds", "rfnet", "generation", "data"}, exclude={"rounds": {"count"}}
            ),
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
        "round.parent.judge.folder_hash": folder_hash(judge) if judge else "none",
    }
    if tune:
        lineage["round.parent.controlnet.folder_hash"] = folder_hash(controlnet)
    new_judge = round_judge(out, k)
    if "judge" not in done:
        sources = [f for f in (*data.feedback, *earlier, dataset) if f.exists()]
        prepared = prepare(params, data.root, data.manifest, sources, shards)
        warm: dict[str, Any] = {"epochs": cfg.rfnet_epochs, "lr": cfg.rfnet_lr} if judge else {}
        trained = train_rfnet(params, shards, folder / "rfnet", init_from=judge, **warm)
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
    if "update" not in done:
        if cfg.method == "rfft":
            ran = rfft_train(params, generator, new_judge, tuned.parent, controlnet=controlnet, progress=progress)
        else:
            # the labelled images: the batch people sent (ingested before the round), else the round's own
            labelled = Path(done["feedback"].get("batch") or dataset)
            try:
                ran = _learn_from_round(params, generator, controlnet, labelled, new_judge, tuned.parent, progress)
            except LabelBatchError as error:  # a lopsided batch: the round keeps its ControlNet and says why
                shutil.rmtree(tuned, ignore_errors=True)
                shutil.copytree(controlnet, tuned)
                ran = {"refused": str(error), "chosen_step": 0, "selection": {}}
        step("update", ran)
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
    selection = done["update"].get("selection", {})
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
        "method_refused": done["update"].get("refused"),
        "controlnet_promoted": done["gate"]["promoted"],
        "controlnet_gate": done["gate"]["reason"],
        # the round's own gain: against the registry's champion when there is one (the ControlNet it started
        # from, in the pipeline), by the reviewer; `comparison` is against the base ControlNet
        "vs_champion": {key: done["gate"].get(key) for key in ("champion_version", "delta", "ci_low", "ci_high")},
    }


def _learn_from_round(
    params: Params, generator: Path, controlnet: Path, batch: Path, judge: Path, out: Path, progress: bool
) -> dict[str, Any]:
    """`rounds.method` learns from the round's labelled images (`batch`, RF1M layout), from the ControlNet that
    made them; the judge is there only for its rate beside the reviewer's."""
    from reliable_ad.api.common import controlnet_version
    from reliable_ad.api.methods import learn_from_labels
    from reliable_ad.training.from_labels import read_labelled_batch

    labelled = read_labelled_batch(batch, controlnet_version(generator, controlnet))
    return learn_from_labels(params, params.rounds.method, generator, controlnet, labelled, judge, out, None, progress)


def round_of_batch(dataset: Path, batch_hash: str) -> int:
    """The round a human feedback batch starts: its place among the batches ingested into `dataset`."""
    from reliable_ad.data.feedback import ledger

    hashes = [entry["batch_hash"] for entry in ledger(dataset)]
    if batch_hash not in hashes:
        raise InputError(f"batch {batch_hash[:12]} was never ingested into {dataset}")
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


def first_attempt_rates(
    params: Params, generator: Path, controlnet: Path, judge: str | Path, known: Mapping[str, RunStats] | None = None
) -> dict[str, Any]:
    """Base vs tuned first attempts on products the pipeline never saw (`rounds.unseen_*`), by both judges;
    `known`: sides made before (`generation.rfft_eval.first_attempts_run`)."""
    from reliable_ad.generation.prompts import load_prompt_pool, pool_for
    from reliable_ad.generation.rfft_eval import first_attempt_comparison

    cfg = params.rounds
    p = params.generation
    return first_attempt_comparison(
        denoiser_from(generator, None, params),
        denoiser_from(generator, controlnet, params),
        judge_from(params, judge),
        load_prompt_pool(p.prompts),
        cfg.unseen_products,
        cfg.unseen_product_seed,
        p.evaluate.recurrent,
        product_source(params),
        resamples=p.gate.resamples,
        confidence=p.gate.confidence,
        tuned_pool=pool_for(controlnet, p.prompts),
        known=known,
        tuned_is_base=generates_the_same(controlnet, generator / "controlnet"),
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
