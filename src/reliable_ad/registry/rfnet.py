"""Log, register and gate an RFNet on its predictions, and the champion's, on the same test split.

The gate is handed the predictions (`api.register_rfnet` makes them with `training.rfnet_eval.predict_split`,
both models on the same rows in one run); it computes the metrics, the paired bootstrap of macro-F1 over
products, logs, registers and decides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.errors import InputError
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import TRAINING_FILE
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.gate import Decision, decide
from reliable_ad.registry.models import Version, log_model_folder
from reliable_ad.registry.tracking import flat_params, lineage, setup
from reliable_ad.stats import paired_bootstrap
from reliable_ad.training.rfnet_eval import Predictions, classification_metrics, macro_f1

REGISTERED_NAME = "rfnet"


class LabelSetMismatch(InputError):
    """Candidate and champion classify over different label sets: their scores are not comparable."""


def check_comparable(candidate: RFNetConfig, champion: RFNetConfig, version: str) -> None:
    """Refuse to gate a candidate against a champion of another label set (before either is evaluated)."""
    if champion.labels != candidate.labels:
        raise LabelSetMismatch(
            f"candidate labels {candidate.labels} differ from champion v{version}'s {champion.labels}: refusing to "
            "compare; register under another name or retrain"
        )


def _aligned(candidate: Predictions, champion: Predictions) -> tuple[np.ndarray, np.ndarray]:
    if candidate.ids != champion.ids:
        raise RuntimeError("candidate and champion were not evaluated on the same items in the same order")
    return candidate.predicted, champion.predicted


def register_rfnet(
    candidate_dir: Path,
    config: RFNetConfig,
    shards: Path,
    ours: Predictions,
    theirs: Predictions | None,
    champion: Version | None,
    gate: GateConfig,
    experiment: str,
    name: str = REGISTERED_NAME,
    decision_file: Path | None = None,
    plots_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Decision:
    """Register the candidate (`config` is its configuration) and gate it on its predictions `ours` against the
    champion's `theirs` on the same rows of `shards`; with no `champion` the first valid candidate is promoted.

    `plots_dir` (the evaluation's figures, if given) is logged with the run; `decision_file` gets the decision.
    The candidate's training record (settings, the shards it trained on, its warm start) becomes the run's
    params and `trained_on.*` tags; `extra_tags` add lineage of the caller's own (a feedback round, its parents).
    """
    import mlflow

    experiment_id = setup(experiment)
    training = _training_record(candidate_dir)
    tags = lineage({"shards": shards}) | {"model.kind": "rfnet"} | _trained_on(training) | (extra_tags or {})
    if champion is not None:
        tags["parent.champion_version"] = champion.version
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-gate", tags=tags):
        mlflow.log_params({f"model.{k}": v for k, v in config.model_dump(exclude={"vocabulary"}).items()})
        if training:
            mlflow.log_params(flat_params(training["config"], "train."))
        metrics = classification_metrics(ours)
        mlflow.log_metrics(_flat("candidate", metrics))
        if plots_dir is not None and plots_dir.is_dir():
            mlflow.log_artifacts(str(plots_dir), "plots")
        paired = None
        if theirs is not None:
            mlflow.log_metrics(_flat("champion", classification_metrics(theirs)))
            a, b = _aligned(ours, theirs)
            classes = len(config.labels)

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
            champion.version if champion else None,
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
