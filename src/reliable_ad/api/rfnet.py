"""RFNet, the judge: train, evaluate, calibrate, ablate, register behind its gate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reliable_ad.params import Params


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


def evaluate_rfnet(
    params: Params, model: Path, shards: Path, metrics: Path, plots: Path, split: str = "test"
) -> dict[str, Any]:
    """Accuracy, per-class figures, macro-F1, AP(available), confusion, calibration into `metrics` and `plots`
    (DVC); the prediction pass takes batch size and threads from `rfnet.train`."""
    from reliable_ad.training.rfnet_eval import evaluate_rfnet as run

    cfg = params.rfnet.train
    return run(model, shards, metrics, plots, split, cfg.batch_size, cfg.threads)


def calibrate_rfnet(params: Params, model: Path, shards: Path, split: str = "val") -> dict[str, Any]:
    """Set the judge's tau on `split`'s rows of `rfnet.train.calibration_source` (maximising F-beta of
    'available', beta `rfnet.train.calibration_beta`), as training does at its end."""
    from reliable_ad.training.rfnet_eval import calibrate_rfnet as run

    cfg = params.rfnet.train
    return run(model, shards, split, cfg.calibration_source, cfg.calibration_beta, cfg.batch_size, cfg.threads)


def ablate_rfnet(
    params: Params, shards: Path, out: Path, metrics: Path, table: Path, only: Sequence[str] = (), fresh: bool = False
) -> str:
    """The paper's modality ablation (one run per variant under `out`); returns its markdown table."""
    from reliable_ad.training.rfnet_ablation import ablate, markdown

    return markdown(ablate(params.rfnet.train, shards, out, metrics, table, only=only, fresh=fresh))


def register_rfnet(
    params: Params,
    model: Path,
    shards: Path,
    decision: Path | None,
    plots: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register an RFNet; champion only if it beats the champion on the same test split (paired bootstrap). Both
    are evaluated here, in one run, and the gate is handed their predictions."""
    from reliable_ad.models.rfnet import RFNet
    from reliable_ad.registry.models import champion
    from reliable_ad.registry.rfnet import REGISTERED_NAME, check_comparable
    from reliable_ad.registry.rfnet import register_rfnet as run
    from reliable_ad.training.rfnet_eval import predict_split

    experiment = params.paths.experiment
    candidate = RFNet.load(model)
    current = champion(REGISTERED_NAME, experiment)
    reference = None
    if current is not None:
        reference = RFNet.load(current.folder)
        check_comparable(candidate.config, reference.config, current.version.version)
    ours = predict_split(candidate, shards, "test")
    theirs = None if reference is None else predict_split(reference, shards, "test")
    result = run(
        model,
        candidate.config,
        shards,
        ours,
        theirs,
        current.version if current else None,
        params.rfnet.gate,
        experiment,
        decision_file=decision,
        plots_dir=plots,
        extra_tags=extra_tags,
    )
    return dict(result.__dict__)
