"""One HTML page over everything the pipeline produced: data, validation, judge, generation, RFFT, registry.

The page is meant to be mailed, attached to a CI run or opened from a laptop without the project around it,
so it is self-contained: images are embedded as base64 data URIs, the CSS is inline, there is no JavaScript
and nothing is loaded over the network. The pipeline is often run in parts, so every input may be missing:
a missing input becomes a note naming the file and the `dvc repro` stage that makes it, never an error.
Stage names are read from the project's dvc.yaml where it names the output, so the hint stays true when
stages are renamed; the fallback names below are used otherwise.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml

from reliable_ad.paths import Paths
from reliable_ad.registry.gate import GATE_FIELDS, version_rows
from reliable_ad.registry.tracking import sqlite_file, tracking_uri


@dataclass(frozen=True)
class Artefact:
    """A pipeline output the page reads: where it lies in the project's layout and the stage that writes it."""

    where: Callable[[Paths], Path]
    stage: str  # used when dvc.yaml does not name the path
    command: str  # what makes it when dvc.yaml has no such stage yet


SYNTH = Artefact(lambda p: p.synth / "synth.json", "synth", "rad data synth")
IMPORT = Artefact(lambda p: p.import_summary, "import", "rad data import")
VALIDATION = Artefact(lambda p: p.validation_metrics, "validate", "rad data validate")
VALIDATION_SUMMARY = Artefact(lambda p: p.validation / "summary.txt", "validate", "rad data validate")
DATA_DOCS = Artefact(lambda p: p.validation / "data_docs" / "index.html", "validate", "rad data validate")
RFNET = Artefact(lambda p: p.rfnet_metrics, "evaluate_rfnet", "rad rfnet evaluate")
RFNET_PNG = Artefact(lambda p: p.rfnet_plots / "rfnet_evaluation.png", "evaluate_rfnet", "rad rfnet evaluate")
ABLATION_JSON = Artefact(lambda p: p.ablation_metrics, "ablate_rfnet", "rad rfnet ablate")
ABLATION_MD = Artefact(lambda p: p.ablation_table, "ablate_rfnet", "rad rfnet ablate")
RFNET_GATE = Artefact(lambda p: p.rfnet_gate, "register_rfnet", "rad rfnet register")
GENERATION = Artefact(lambda p: p.generation_metrics, "evaluate_generation", "rad evaluate-generation")
GENERATION_PNG = Artefact(
    lambda p: p.generation_plots / "generation_curves.png", "evaluate_generation", "rad evaluate-generation"
)
RFFT = Artefact(lambda p: p.rfft_metrics, "evaluate_rfft", "rad rfft evaluate")
RFFT_PNG = Artefact(lambda p: p.rfft_grid, "evaluate_rfft", "rad rfft evaluate")
RFFT_GATE = Artefact(lambda p: p.rfft_gate, "register_rfft", "rad rfft register")
ROUNDS = Artefact(lambda p: p.rounds_metrics, "feedback_rounds", "rad rounds run")
ROUNDS_PNG = Artefact(lambda p: p.rounds_plots / "rounds_rates.png", "feedback_rounds", "rad rounds run")
REVIEW = Artefact(lambda p: p.review_metrics, "review_pull", "rad review pull")
METHODS = Artefact(lambda p: p.methods_metrics, "compare_methods", "rad rfft compare")

GENERATION_HEADLINE = (
    "judge_auc_generated",
    "judge_precision_generated",
    "available_rate_first_rfnet",
    "available_rate_first_reviewer",
    "mean_attempts",
    "unet_evals_per_accept",
    "abandoned_share",
    "unet_evals_ratio_early_vs_plain",
    "usable_per_unet_eval_ratio_steering_vs_plain",
    "unet_evals_per_usable_ratio_rfft_best_vs_base_plain",
    "probe_overhead_share",
    "accepts_per_min_ratio_refill_vs_whole_batch",
    "false_abort_rate",
)
COST_COLUMNS = ("unet_evals_per_usable", "seconds_per_usable", "usable_images", "reviewer_agrees_with_accepts")
COST_KEYS = ("unet_evals_per_usable_base_", "unet_evals_per_usable_rfft_", "seconds_per_usable_")  # the grid's


# ------------------------------------------------------------------------------------------------ inputs


def format_value(value: Any) -> str:
    """One cell's text: floats to 4 decimals (NaN as n/a, as JSON from the evaluators may hold it)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


_NUMBER = re.compile(r"^[-+−]?\d[\d,]*(\.\d+)?%?$")


def is_numeric(value: Any) -> bool:
    """Whether a cell is a number (also as text, as in the ablation's markdown), so it is right-aligned."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(_NUMBER.match(value.strip())))


def _stage_outputs(root: Path) -> dict[str, str] | None:
    """Output path -> stage name from dvc.yaml (outs, metrics, plots); None when there is no readable dvc.yaml."""
    try:
        spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    stages = spec.get("stages") if isinstance(spec, dict) else None
    if not isinstance(stages, dict):
        return None
    outputs: dict[str, str] = {}
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            continue
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                path = next(iter(entry), None) if isinstance(entry, dict) else entry
                if isinstance(path, str):
                    outputs[path.rstrip("/")] = str(name)
    return outputs


class Inputs:
    """Reads the pipeline's outputs under `root`; whatever is missing or unreadable becomes a note."""

    def __init__(self, root: Path, paths: Paths) -> None:
        self.root = root
        self.paths = paths
        self.stages = _stage_outputs(root)

    def where(self, artefact: Artefact) -> str:
        """The artefact's path under the project root, as dvc.yaml writes it."""
        return artefact.where(self.paths).as_posix()

    def stage(self, artefact: Artefact) -> str:
        """The stage that makes `artefact`: dvc.yaml's output that is it or the folder holding it, else the fallback."""
        if self.stages:
            where = self.where(artefact)
            matches = [out for out in self.stages if where == out or where.startswith(out + "/")]
            if matches:
                return self.stages[max(matches, key=len)]
        return artefact.stage

    def missing(self, artefact: Artefact) -> str:
        """The note for a missing input; when dvc.yaml lacks the stage, it also names the command that makes it."""
        stage = self.stage(artefact)
        if self.stages is not None and stage not in self.stages.values():
            return (
                f"not produced yet: {self.where(artefact)} (run `dvc repro {stage}`; dvc.yaml has no such stage yet, "
                f"so run `{artefact.command}` directly)"
            )
        return f"not produced yet: {self.where(artefact)} (run `dvc repro {stage}`)"

    def path(self, artefact: Artefact, notes: list[str]) -> Path | None:
        file = self.root / self.where(artefact)
        if file.is_file():
            return file
        notes.append(self.missing(artefact))
        return None

    def text(self, artefact: Artefact, notes: list[str]) -> str | None:
        file = self.path(artefact, notes)
        if file is None:
            return None
        try:
            return file.read_text(errors="replace")
        except OSError as error:
            notes.append(f"unreadable: {self.where(artefact)}: {error}")
            return None

    def json(self, artefact: Artefact, notes: list[str]) -> dict[str, Any] | None:
        """The JSON object in `artefact`; a half-written or wrong-shaped file is a note, not a crash."""
        text = self.text(artefact, notes)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            notes.append(f"unreadable: {self.where(artefact)}: not valid JSON ({error})")
            return None
        if not isinstance(data, dict):
            notes.append(f"unreadable: {self.where(artefact)}: expected a JSON object, found {type(data).__name__}")
            return None
        return data

    def image(self, artefact: Artefact, notes: list[str]) -> str | None:
        """The image as a data URI, so the page carries it and needs no file next to it."""
        file = self.path(artefact, notes)
        if file is None:
            return None
        mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        try:
            payload = base64.b64encode(file.read_bytes()).decode("ascii")
        except OSError as error:
            notes.append(f"unreadable: {self.where(artefact)}: {error}")
            return None
        return f"data:{mime};base64,{payload}"


def _scalars(data: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """The plain (non-nested) entries of a metrics dict, in file order."""
    return [(k, v) for k, v in data.items() if k not in skip and not isinstance(v, dict | list)]


def _counts(counts: Any) -> list[tuple[str, Any, str]]:
    """Rows (name, count, share) of a {name: count} dict."""
    if not isinstance(counts, dict):
        return []
    total = sum(v for v in counts.values() if isinstance(v, int | float)) or 1
    return [(str(k), v, f"{100 * v / total:.1f}%" if isinstance(v, int | float) else "") for k, v in counts.items()]


# ---------------------------------------------------------------------------------------------- sections


def dataset_section(inputs: Inputs) -> dict[str, Any]:
    notes: list[str] = []
    synth = inputs.json(SYNTH, notes)
    if synth is None:
        return {"notes": notes}
    config = synth.get("config") if isinstance(synth.get("config"), dict) else {}
    return {
        "notes": notes,
        "summary": _scalars(synth),
        "labels": _counts(synth.get("labels")),
        "splits": _counts(synth.get("splits")),
        "config": [(k, v) for k, v in (config or {}).items()],
    }


def validation_section(inputs: Inputs, out_dir: Path) -> dict[str, Any]:
    notes: list[str] = []
    imported = inputs.json(IMPORT, notes)
    validation = inputs.json(VALIDATION, notes)
    summary = inputs.text(VALIDATION_SUMMARY, notes)
    docs = inputs.path(DATA_DOCS, notes)
    section: dict[str, Any] = {"notes": notes, "summary_text": summary}
    if imported is not None:
        section["import"] = _scalars(imported)
        section["rejected"] = _counts(imported.get("rejected"))
    if validation is not None:
        section["validation"] = _scalars(validation)
        section["success"] = validation.get("success")
    if docs is not None:
        # relative, so the link survives moving the project; it is a link for the reader, not a resource load
        section["data_docs"] = Path(os.path.relpath(docs.resolve(), out_dir.resolve())).as_posix()
    return section


def rfnet_section(inputs: Inputs) -> dict[str, Any]:
    notes: list[str] = []
    metrics = inputs.json(RFNET, notes)
    section: dict[str, Any] = {"notes": notes, "image": inputs.image(RFNET_PNG, notes)}
    generated = inputs.json(GENERATION, [])  # the generation section notes it when missing
    if generated is not None:  # the judge where it matters: on the generator's own images, against the reviewer
        keys = ("judge_auc_generated", "judge_precision_generated", "judged_attempts")
        section["on_generated"] = [(k, generated[k]) for k in keys if k in generated]
    if metrics is not None:
        section["headline"] = _scalars(metrics)
        per_class = metrics.get("per_class")
        if isinstance(per_class, dict):
            section["per_class"] = [
                (label, *(row.get(k) for k in ("precision", "recall", "f1", "support")))
                for label, row in per_class.items()
                if isinstance(row, dict)
            ]
        by_source = metrics.get("by_source")
        if isinstance(by_source, dict):
            section["by_source"] = [
                (source, *(row.get(k) for k in ("n", "accuracy", "macro_f1", "ap_available", "ece")))
                for source, row in by_source.items()
                if isinstance(row, dict)
            ]
    return section


_SEPARATOR = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def markdown_table(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """A GitHub-style pipe table as (header, rows, other lines); header is empty when there is no table."""
    lines = [line for line in text.splitlines() if line.strip()]
    for i in range(len(lines) - 1):
        if lines[i].lstrip().startswith("|") and _SEPARATOR.match(lines[i + 1].strip()):
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            header = _cells(lines[i])
            rows = [_cells(line) for line in lines[i + 2 : end]]
            return header, rows, lines[:i] + lines[end:]
    return [], [], lines


def ablation_section(inputs: Inputs) -> dict[str, Any]:
    notes: list[str] = []
    inputs.path(ABLATION_JSON, notes)  # the page shows the table; the JSON is only checked for presence
    text = inputs.text(ABLATION_MD, notes)
    if text is None:
        return {"notes": notes}
    header, rows, other = markdown_table(text)
    return {"notes": notes, "header": header, "rows": rows, "other": other}


def generation_section(inputs: Inputs) -> dict[str, Any]:
    notes: list[str] = []
    metrics = inputs.json(GENERATION, notes)
    section: dict[str, Any] = {"notes": notes, "image": inputs.image(GENERATION_PNG, notes)}
    if metrics is None:
        return section
    headline = [(k, metrics[k]) for k in GENERATION_HEADLINE if k in metrics]
    in_grid = tuple(k for k in metrics if k.startswith(COST_KEYS))
    section["headline"] = headline + _scalars(metrics, skip=GENERATION_HEADLINE + in_grid)
    cost = metrics.get("cost_per_usable_image")
    section["cost"] = [
        (generator, scheduler, *[row.get(c) for c in COST_COLUMNS])
        for generator, runs in (cost.items() if isinstance(cost, dict) else [])
        for scheduler, row in runs.items()
    ]
    probes = metrics.get("probe")
    section["probe"] = [
        (generator, step, *[aucs.get(by) for by in ("x0_judge", "probe", "both")])
        for generator, report in (probes.items() if isinstance(probes, dict) else [])
        for step, aucs in (report.get("out_of_fold_auc") or {} if isinstance(report, dict) else {}).items()
    ]
    early = metrics.get("early_rejection")
    section["early"] = list(early.items()) if isinstance(early, dict) else []
    runs = metrics.get("runs")
    if isinstance(runs, dict) and runs:
        columns: list[str] = []
        for run in runs.values():
            columns += [k for k in (run if isinstance(run, dict) else {}) if k not in columns]
        section["run_columns"] = columns
        section["runs"] = [
            (name, [run.get(c) if isinstance(run, dict) else None for c in columns]) for name, run in runs.items()
        ]
    return section


def rfft_section(inputs: Inputs) -> dict[str, Any]:
    notes: list[str] = []
    metrics = inputs.json(RFFT, notes)
    section: dict[str, Any] = {"notes": notes, "image": inputs.image(RFFT_PNG, notes)}
    if metrics is None:
        return section
    used: set[str] = set()
    pairs = []
    for key in metrics:
        name = key.removesuffix("_base")
        if key.endswith("_base") and f"{name}_tuned" in metrics:
            base, tuned = metrics[key], metrics[f"{name}_tuned"]
            both = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (base, tuned))
            pairs.append((name, base, tuned, tuned - base if both else None))
            used |= {key, f"{name}_tuned"}
    section["pairs"] = pairs
    intervals = []
    for prefix, label in (("delta", "reviewer"), ("delta_rfnet", "RFNet")):
        if prefix in metrics:
            intervals.append(
                (label, metrics[prefix], metrics.get(f"{prefix}_ci_low"), metrics.get(f"{prefix}_ci_high"))
            )
            used |= {prefix, f"{prefix}_ci_low", f"{prefix}_ci_high"}
    section["intervals"] = intervals
    section["guard_ok"] = metrics.get("guard_ok")
    used.add("guard_ok")
    section["other"] = _scalars(metrics, skip=tuple(used))
    return section


ROUND_COLUMNS = (
    "round",
    "human labels (method)",
    "reviewer base",
    "reviewer tuned",
    "reviewer Δ",
    "CI low",
    "CI high",
    "RFNet tuned",
    "hacking gap",
    "guard",
    "attempts per available, base",
    "tuned",
    "unseen reviewer Δ",
    "ControlNet promoted",
)


def rounds_section(inputs: Inputs) -> dict[str, Any]:
    """Both judges' rates per feedback round, with the people's labels each round used."""
    notes: list[str] = []
    metrics = inputs.json(ROUNDS, notes)
    if metrics is None:
        return {"notes": notes}
    image = inputs.image(ROUNDS_PNG, notes)
    rows = []
    for row in metrics.get("rounds") or []:
        c, unseen = row.get("comparison") or {}, row.get("unseen") or {}
        rows.append(
            [
                row.get("round"),
                (row.get("human_labels") or {}).get("method"),
                c.get("available_rate_first_reviewer_base"),
                c.get("available_rate_first_reviewer_tuned"),
                c.get("delta"),
                c.get("delta_ci_low"),
                c.get("delta_ci_high"),
                c.get("available_rate_first_rfnet_tuned"),
                c.get("hacking_gap_tuned"),
                c.get("guard_ok"),
                c.get("attempts_per_available_base"),
                c.get("attempts_per_available_tuned"),
                unseen.get("delta"),
                row.get("controlnet_promoted"),
            ]
        )
    return {"notes": notes, "header": ROUND_COLUMNS, "rows": rows, "summary": _scalars(metrics), "image": image}


METHOD_COLUMNS = (
    "method",
    "human labels",
    "reviewer base",
    "reviewer tuned",
    "reviewer Δ",
    "CI low",
    "CI high",
    "RFNet Δ",
    "hacking gap",
    "guard",
    "unseen Δ",
    "attempts per available base",
    "attempts per available tuned",
    "labels per point",
)


def _method_grid(name: str) -> Callable[[Paths], Path]:
    return lambda paths: paths.methods / name.replace("+", "-") / "grid.png"


def methods_section(inputs: Inputs) -> dict[str, Any]:
    """The paper's comparison table: each way people's labels reach the generator, counted by the reviewer, with
    each method's before/after grid."""
    notes: list[str] = []
    metrics = inputs.json(METHODS, notes)
    if metrics is None:
        return {"notes": notes}
    rows, figures = [], []
    for name, r in (metrics.get("methods") or {}).items():
        label = f"{name} (refused: {r['refused']})" if "refused" in r else name
        rows.append(
            [label, r.get("human_labels"), r.get("reviewer_rate_base"), r.get("reviewer_rate_tuned"),
             r.get("reviewer_delta"), r.get("reviewer_delta_ci_low"), r.get("reviewer_delta_ci_high"),
             r.get("rfnet_delta"), r.get("hacking_gap"), r.get("guard_ok"), r.get("unseen_reviewer_delta"),
             r.get("attempts_per_available_base"), r.get("attempts_per_available_tuned"), r.get("labels_per_point")]
        )  # fmt: skip
        if "refused" in r:
            continue
        grid = Artefact(_method_grid(name), "compare_methods", "rad rfft compare")
        figures.append((inputs.image(grid, notes), f"{name}: base (above) and tuned (below), same products and seeds"))
    summary = _scalars(metrics.get("batch") or {}) + _scalars(metrics.get("registered") or {})
    return {"notes": notes, "header": METHOD_COLUMNS, "rows": rows, "summary": summary, "figures": figures}


# ---------------------------------------------------------------------------------------------- registry


def _decision_rows(decision: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [(k, decision[k]) for k in ("name", "version", *GATE_FIELDS) if k in decision]
    rows += [(k, v) for k, v in decision.items() if k not in {r[0] for r in rows} and k != "extra"]
    extra = decision.get("extra")
    if isinstance(extra, dict):
        rows += [(f"extra.{k}", v) for k, v in extra.items()]
    return rows


def registry_models(root: Path) -> dict[str, Any]:
    """Every version of the registered models with aliases and gate decision (the rows `rad models list`
    prints), or a note why there are none.

    The store of the project at `root` is only read: its URI is handed to the registry, and neither MLflow's
    settings nor the environment change. A store that does not exist is reported, not created: a report must
    not leave a database behind.
    """
    uri = tracking_uri(root)
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        return {"note": f"no tracking store at {database}: nothing has been registered yet", "models": []}
    from reliable_ad.registry.controlnet import REGISTERED_NAME as CONTROLNET
    from reliable_ad.registry.rfnet import REGISTERED_NAME as RFNET_NAME

    names = (RFNET_NAME, CONTROLNET)
    models = []
    try:
        for name in names:
            versions = [
                {
                    "version": row["version"],
                    "aliases": ", ".join(row["aliases"]),
                    "gate": [row[k] for k in GATE_FIELDS],
                    "extra": row["extra"],
                }
                for row in version_rows(name, uri)
            ]
            models.append({"name": name, "versions": versions})
    except Exception as error:  # any store failure (locked, old schema, server down): a note, the page renders
        return {"note": f"tracking store {uri} could not be read: {type(error).__name__}: {error}", "models": []}
    note = None
    if not any(m["versions"] for m in models):
        note = f"the tracking store {uri} has no registered versions of {' or '.join(names)}"
    return {"note": note, "models": models}


def review_section(inputs: Inputs) -> dict[str, Any]:
    """The last `rad review pull`: what came back, and how the judge's verdicts compare with the people's."""
    notes: list[str] = []
    pulled = inputs.json(REVIEW, notes)
    if pulled is None:
        return {"notes": notes}
    judge: dict[str, Any] = pulled["judge"] if isinstance(pulled.get("judge"), dict) else {}
    confusion: dict[str, Any] = judge["confusion"] if isinstance(judge.get("confusion"), dict) else {}
    humans = sorted({h for row in confusion.values() if isinstance(row, dict) for h in row})
    return {
        "notes": notes,
        "pull": _scalars(pulled),
        "annotators": _scalars(pulled.get("annotators") or {}),
        "judge": _scalars(judge),
        "drift": judge.get("judge_drift"),
        "humans": humans,
        "confusion": [[j, *(row.get(h, 0) for h in humans)] for j, row in confusion.items() if isinstance(row, dict)],
    }


def registry_section(inputs: Inputs, registry: bool) -> dict[str, Any]:
    notes: list[str] = []
    gates = []
    for title, artefact in (("RFNet gate", RFNET_GATE), ("ControlNet (RFFT) gate", RFFT_GATE)):
        decision = inputs.json(artefact, notes)
        if decision is not None:
            gates.append({"title": title, "path": inputs.where(artefact), "rows": _decision_rows(decision)})
    skipped = {"note": "registry not read (--no-registry)", "models": []}
    store = registry_models(inputs.root) if registry else skipped
    return {"notes": notes, "gates": gates, "store": store, "gate_fields": GATE_FIELDS}


# ------------------------------------------------------------------------------------------------- page

TEMPLATE = "report.html"
TOC = (
    ("dataset", "Dataset"),
    ("validation", "Validation"),
    ("rfnet", "RFNet"),
    ("ablation", "Ablation"),
    ("generation", "Generation"),
    ("rfft", "RFFT"),
    ("rounds", "Rounds"),
    ("methods", "Methods"),
    ("review", "Review"),
    ("registry", "Registry"),
)


def _environment() -> jinja2.Environment:
    """The page's template ships with the package (templates/report.html). Autoescaping on: every string on the
    page comes from files and tags that users and runs wrote."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reliable_ad", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
    )
    env.filters["fmt"] = format_value
    env.tests["numeric"] = is_numeric
    env.filters["runrow"] = lambda run: [run[0], *run[1]]
    return env


def render(context: dict[str, Any]) -> str:
    return _environment().get_template(TEMPLATE).render(**context)


def build_report(root: Path, out: Path, paths: Paths, registry: bool = True) -> Path:
    """Write the report for the project at `root` (its outputs where `paths` puts them) to `out` (one
    self-contained HTML file) and return `out`.

    `registry=False` skips MLflow (seconds of import, and a store that may be busy); the gate JSONs still show.
    The file is written next to its final name and moved into place, so a failed run leaves the old page intact.
    """
    root = Path(root)
    out = Path(out)
    inputs = Inputs(root, paths)
    context = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "root": str(root.resolve()),
        "toc": TOC,
        "dataset": dataset_section(inputs),
        "validation": validation_section(inputs, out.parent),
        "rfnet": rfnet_section(inputs),
        "ablation": ablation_section(inputs),
        "generation": generation_section(inputs),
        "rfft": rfft_section(inputs),
        "rounds": rounds_section(inputs),
        "methods": methods_section(inputs),
        "review": review_section(inputs),
        "registry": registry_section(inputs, registry),
    }
    html = render(context)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(out)
    return out
