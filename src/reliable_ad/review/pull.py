"""Finished review tasks become a feedback batch in the RF1M layout, written only for what is new or changed.

Per task, each annotator's latest answer counts once (cancelled ones not at all). A vote whose label is not in
the label set, or that picks no single verdict, is rejected with the task, annotation and reason. The votes
resolve by the configured policy: `majority` (a tie is held back) or `hold` (any disagreement is held back);
a task with fewer than `min_annotators` votes waits.

Idempotence comes from the feedback dataset itself: each row it holds from a review carries its project, task
and the version of the votes it was made from (a digest of their ids and edit times). A task whose version is
already there is skipped; a task whose votes changed after a pull (an edited answer, a new annotator) becomes a
new row that names the row it supersedes, which the ingest drops from the dataset. The old label lives on in
the earlier DVC version, never beside the new one.

Nothing is written before every task has been read from the server: an unreachable server leaves no batch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reliable_ad.data import layout
from reliable_ad.data.layout import UnsafePath
from reliable_ad.labels import LabelSet
from reliable_ad.review.agreement import Judged, Vote, annotator_agreement
from reliable_ad.review.client import LabelStudio
from reliable_ad.review.config import ReviewConfig
from reliable_ad.review.queue import VERDICT, find_project, item_files, ours, write_jsonl

JUDGE_FIELDS = ("p_available", "judge_label", "judge_threshold", "judge")
KEPT_FIELDS = ("product_id", "category", "height_cm", "split", *JUDGE_FIELDS)


@dataclass
class Row:
    """A resolved task on its way into the batch."""

    task: dict[str, Any]
    label: str
    votes: list[Vote]
    version: str
    supersedes: str | None

    def id(self, project: int) -> str:
        return f"ls{project}-t{self.task['id']}-{self.version[:8]}"


class PullResult(BaseModel):
    project: int
    tasks_annotated: int  # = rows + unchanged + held + quarantined
    rows: int  # new or changed: written to the batch
    changed: int  # of `rows`: replace an earlier version
    unchanged: int
    held: int
    quarantined: int
    votes_rejected: int
    rejects: str | None
    batch: str | None
    annotators: dict[str, float]  # agreement between annotators of the tasks with several


def votes_of(task: dict[str, Any], labels: LabelSet) -> tuple[list[Vote], list[dict[str, Any]]]:
    """Each annotator's latest valid vote on the task, and the rejected ones with their reasons."""
    latest: dict[int, dict[str, Any]] = {}
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        who = annotation.get("completed_by")
        who = int(who["id"] if isinstance(who, dict) else who or 0)
        if who not in latest or str(annotation.get("updated_at")) > str(latest[who].get("updated_at")):
            latest[who] = annotation
    votes, rejects = [], []
    for who, annotation in sorted(latest.items()):
        chosen = [
            choice
            for r in annotation.get("result") or []
            if r.get("from_name") == VERDICT
            for choice in (r.get("value") or {}).get("choices") or []
        ]
        reason = _vote_problem(chosen, labels)
        if reason:
            rejects.append({"task": task["id"], "annotation": annotation.get("id"), "annotator": who, "reason": reason})
        else:
            votes.append(Vote(who, int(annotation["id"]), str(annotation.get("updated_at")), chosen[0]))
    return votes, rejects


def _vote_problem(chosen: list[str], labels: LabelSet) -> str | None:
    if len(chosen) != 1:
        return f"picks {len(chosen)} verdicts ({chosen}); exactly one is needed"
    if chosen[0] not in labels:
        return f"label {chosen[0]!r} is not in the label set {list(labels.names)}"
    return None


def resolve(votes: list[Vote], policy: str, min_annotators: int) -> tuple[str | None, str]:
    """(label, '') when the votes settle the task, else (None, why it waits)."""
    if len(votes) < min_annotators:
        return None, f"{len(votes)} of {min_annotators} annotators answered"
    counts = Counter(v.label for v in votes).most_common()
    if len(counts) > 1 and (policy == "hold" or counts[0][1] == counts[1][1]):
        return None, f"annotators disagree: {dict(counts)}"
    return counts[0][0], ""


def review_rows(dataset: Path) -> dict[tuple[int, int], tuple[str, str]]:
    """(project, task) -> (row id, votes version) of the rows the feedback dataset holds from reviews."""
    meta = dataset / layout.METADATA_FILE
    found: dict[tuple[int, int], tuple[str, str]] = {}
    if not meta.exists():
        return found
    for text in meta.read_text().splitlines():
        entry = json.loads(text) if text.strip() else {}
        if "review_task" in entry:
            key = (int(entry["review_project"]), int(entry["review_task"]))
            found[key] = (Path(entry["image"]).stem, str(entry["review_version"]))
    return found


def _version(label: str, votes: list[Vote]) -> str:
    state = [label, sorted((v.annotation, v.updated_at) for v in votes)]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


def pull(
    client: LabelStudio, cfg: ReviewConfig, labels: LabelSet, dataset: Path, batches: Path, reports: Path
) -> tuple[PullResult, list[Row]]:
    """Read the project's finished tasks and write the new or changed ones as a batch under `batches`."""
    pid = find_project(client, cfg.project)
    tasks = ours(client.export(pid))
    known = review_rows(dataset)
    rows: list[Row] = []
    rejects: list[dict[str, Any]] = []
    all_votes: list[list[Vote]] = []
    unchanged = held = quarantined = 0
    annotated = 0
    for task in tasks:
        votes, rejected = votes_of(task, labels)
        rejects += rejected
        if not votes and not rejected:
            continue  # only cancelled answers: not annotated
        annotated += 1
        all_votes.append(votes)
        label, why = resolve(votes, cfg.resolution, cfg.min_annotators)
        if label is None:
            if votes:
                held += 1
                rejects.append({"task": task["id"], "held": True, "reason": why})
            else:
                quarantined += 1
            continue
        version = _version(label, votes)
        earlier = known.get((pid, int(task["id"])))
        if earlier is not None and earlier[1] == version:
            unchanged += 1
            continue
        problem = _missing_files(cfg.document_root, task)
        if problem:
            quarantined += 1
            rejects.append({"task": task["id"], "reason": problem})
            continue
        rows.append(Row(task, label, votes, version, earlier[0] if earlier else None))
    batch = _write_batch(rows, pid, labels, cfg.document_root, batches) if rows else None
    result = PullResult(
        project=pid,
        tasks_annotated=annotated,
        rows=len(rows),
        changed=sum(r.supersedes is not None for r in rows),
        unchanged=unchanged,
        held=held,
        quarantined=quarantined,
        votes_rejected=sum("annotation" in r for r in rejects),
        rejects=write_jsonl(reports / "pull_rejects.jsonl", rejects),
        batch=str(batch) if batch else None,
        annotators=annotator_agreement(all_votes),
    )
    return result, rows


def _missing_files(root: Path, task: dict[str, Any]) -> str | None:
    try:
        files = item_files(root, task["data"]["rad"])
    except UnsafePath as error:
        return str(error)
    missing = [str(path) for path in files.values() if not path.is_file()]
    return f"{', '.join(missing)} missing (deleted after the push?)" if missing else None


def _write_batch(rows: list[Row], project: int, labels: LabelSet, root: Path, batches: Path) -> Path:
    """The rows as an RF1M-layout batch, written aside and moved into place whole."""
    ids = sorted(row.id(project) for row in rows)
    final = batches / f"review-p{project}-{hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]}"
    if final.exists():
        return final  # the same rows were written before (an ingest that failed part-way is rerun on it)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for kind in (layout.IMAGES_DIR, layout.PRODUCTS_DIR):
        (partial / kind).mkdir(parents=True)
    label_ids = dict(zip(labels.names, labels.ids, strict=True))
    with (
        (partial / layout.LABEL_FILE).open("w") as label_file,
        (partial / layout.METADATA_FILE).open("w") as meta_file,
    ):
        for row in rows:
            rid, rad = row.id(project), row.task["data"]["rad"]
            files = item_files(root, rad)
            shutil.copyfile(files["images"], partial / layout.IMAGES_DIR / f"{rid}.png")
            shutil.copyfile(files["products"], partial / layout.PRODUCTS_DIR / f"{rid}.png")
            label_file.write(f"{rid}.png\t{label_ids[row.label]}\n")
            entry = {k: rad[k] for k in KEPT_FIELDS if rad.get(k) is not None}
            entry.setdefault("product_id", Path(str(rad["name"])).stem)
            entry |= {
                "image": f"{rid}.png",
                "prompt": row.task["data"]["prompt"],
                "title": row.task["data"]["title"],
                "source": "label-studio",
                "review_project": project,
                "review_task": int(row.task["id"]),
                "review_version": row.version,
                "annotators": len(row.votes),
            }
            if row.supersedes:
                entry["supersedes"] = row.supersedes
            meta_file.write(json.dumps(entry) + "\n")
    partial.rename(final)
    return final


def judged(rows: list[Row]) -> list[Judged]:
    """The pulled rows that the judge saw, for judge-vs-human agreement."""
    out = []
    for row in rows:
        rad = row.task["data"]["rad"]
        if rad.get("judge_label") is not None and rad.get("p_available") is not None:
            threshold = float(rad.get("judge_threshold", 0.5))
            out.append(Judged(str(rad["judge_label"]), float(rad["p_available"]), threshold, row.label))
    return out
