"""Log, register and gate an RFNet: candidate and champion judged on the same test split in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.models.rfnet import TRAINING_FILE, RFNet
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.gate import Decision, decide
from reliable_ad.registry.models import CHAMPION, by_alias, download_model, log_model_folder
from reliable_ad.registry.tracking import flat_params, lineage, setup
from reliable_ad.stats import paired_bootstrap
from reliable_ad.training.rfnet_eval import Predictions, classification_metrics, macro_f1, predict_split

REGISTERED_NAME = "rfnet"


class LabelSetMismatch(ValueError):
    """Candidate and champion classify over different label sets: their scores are not comparable."""


def _aligned(candidate: Predictions, champion: Predictions) -> tuple[np.ndarray, np.ndarray]:
    if candidate.ids != champion.ids:
        raise RuntimeError("candidate and champion were not evaluated on the same items in the same order")
    return candidate.predicted, champion.predicted


def register_rfnet(
    candidate_dir: Path,
    shards: Path,
    gate: GateConfig,
    experiment: str = "reliable-ad",
    name: str = REGISTERED_NAME,
    split: str = "test",
    decision_file: Path | None = None,
    plots_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Decision:
    """Evaluate the candidate (and the champion, if any) on `split`, log everything, register, gate.

    `plots_dir` (the evaluation's figures, if given) is logged with the run; `decision_file` gets the decision.
    The candidate's training record (settings, the shards it trained on, its warm start) becomes the run's
    params and `trained_on.*` tags; `extra_tags` add lineage of the caller's own (a feedback round, its parents).
    """
    import mlflow

    experiment_id = setup(experiment)
    candidate = RFNet.load(candidate_dir)
    champion_version = by_alias(name, CHAMPION)
    champion = RFNet.load(download_model(f"{name}@{CHAMPION}", experiment)) if champion_version else None
    if champion_version is not None and champion is not None and champion.config.labels != candidate.config.labels:
        raise LabelSetMismatch(
            f"candidate labels {candidate.config.labels} differ from champion v{champion_version.version}'s "
            f"{champion.config.labels}: refusing to compare; register under another name or retrain"
        )
    training = _training_record(candidate_dir)
    tags = lineage({"shards": shards}) | {"model.kind": "rfnet"} | _trained_on(training) | (extra_tags or {})
    if champion_version is not None:
        tags["parent.champion_version"] = champion_version.version
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-gate", tags=tags):
        mlflow.log_params({f"model.{k}": v for k, v in candidate.config.model_dump(exclude={"vocabulary"}).items()})
        if training:
            mlflow.log_params(flat_params(training["config"], "train."))
        ours = predict_split(candidate, shards, split)
        metrics = classification_metrics(ours)
        mlflow.log_metrics(_flat("candidate", metrics))
        if plots_dir is not None and plots_dir.is_dir():
            mlflow.log_artifacts(str(plots_dir), "plots")
        paired = None
        if champion is not None:
            theirs = predict_split(champion, shards, split)
            mlflow.log_metrics(_flat("champion", classification_metrics(theirs)))
            a, b = _aligned(ours, theirs)
            classes = len(candidate.config.labels)

            def statistic(idx: np.ndarray) -> tuple[float, float]:
                return macro_f1(ours.target[idx], a[idx], classes), macro_f1(ours.target[idx], b[idx], classes)

            groups = np.unique(np.array(ours.product_ids), return_inverse=True)[1]
            paired = paired_bootstrap(
                a.astype(float),
                b.astype(float),
                statistic=statistic,
                groups=groups,
                resamples=gate.resamples,
                confidence=gate.confidence,
                seed=gate.seed,
            )
            mlflow.log_metrics(
                {"delta_macro_f1": paired.delta, "delta_ci_low": paired.low, "delta_ci_high": paired.high}
            )
        version = log_model_folder("rfnet", candidate_dir, name)
        decision = decide(
            name,
            version.version,
            "macro_f1",
            metrics["macro_f1"],
            paired,
            champion_version.version if champion_version else None,
            gate,
            extra={"data_hash": tags.get("data.shards.dvc_hash"), "ap_available": metrics["ap_available"]},
        )
        mlflow.log_dict(decision.__dict__, "gate_decision.json")
        mlflow.set_tag("gate.promoted", str(decision.promoted).lower())
    if decision_file is not None:
        decision_file.parent.mkdir(parents=True, exist_ok=True)
        decision_file.write_text(json.dumps(decision.__dict__, indent=2, default=str) + "\n")
    return decision


def _training_record(model_dir: Path) -> dict[str, Any] | None:
    """How the model was trained (written by `train_rfnet`); None for a model from elsewhere."""
    path = model_dir / TRAINING_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _trained_on(record: dict[str, Any] | None) -> dict[str, str]:
    """Tags from the model's training record: the data version it learned from, not the one it is gated on."""
    if record is None:
        return {}
    tags = {
        "trained_on.shards.path": record["shards"]["path"],
        "trained_on.shards.index_sha256": record["shards"]["index_sha256"],
    }
    if record.get("init_from"):
        tags["trained_on.init_from.sha256"] = record["init_from"]["sha256"]
    return tags


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    flat = {f"{prefix}.{k}": float(metrics[k]) for k in ("accuracy", "macro_f1", "ap_available", "ece")}
    flat.update({f"{prefix}.f1.{k}": float(v["f1"]) for k, v in metrics["per_class"].items()})
    return flat
