"""Log, register and gate a fine-tuned ControlNet as `reliable-controlnet`.

The gate is handed a comparison of the candidate with the champion (or, with no champion, the base
ControlNet): both generated for the same held-out products with the same seeds in one run and judged by one
fixed judge (`generation.rfft_eval.compare_generators`; `api.register_controlnet` runs it, or reuses `rad rfft
evaluate`'s when its `comparison_key` says it compared the same generator, candidate, judge and settings).
The first-attempt available rate by the gate's judge (the reviewer, or a frozen evaluation RFNet: never one
RFFT tuned against) must improve with a paired bootstrap interval above the margin, the candidate's quality
guard must hold, and its hacking gap (the training judge's rate minus the reviewer's) must stay under the
bound. The run records the candidate's RFFT settings as params and, for a judge folder, the hash of its files
as a tag.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from reliable_ad.data.hashing import folder_hash
from reliable_ad.errors import InputError
from reliable_ad.generation.config import RFFTConfig
from reliable_ad.registry.config import ControlNetGateConfig
from reliable_ad.registry.gate import Decision, decide
from reliable_ad.registry.models import Version, log_model_folder
from reliable_ad.registry.tracking import flat_params, lineage, model_lineage, setup
from reliable_ad.stats import PairedDelta

REGISTERED_NAME = "reliable-controlnet"


def register_controlnet(
    candidate: Path,
    generator: Path,
    judge_uri: str,
    comparison: dict[str, Any],
    how: str,
    champion: Version | None,
    gate: ControlNetGateConfig,
    experiment: str,
    name: str = REGISTERED_NAME,
    decision_file: Path | None = None,
    run_params: dict[str, Any] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Decision:
    """Register the candidate and gate it on `comparison` (`compare_generators`' metrics against `champion`, or
    against the base ControlNet when `champion` is None); `how` says where the comparison came from.

    `run_params` are logged beside the RFFT settings saved with the candidate (``rfft.*``); `extra_tags` add
    lineage of the caller's own (a feedback round, its parents).
    """
    import mlflow

    experiment_id = setup(experiment)
    tags = lineage({"generator": generator}) | model_lineage({"judge": judge_uri})
    tags |= {"model.kind": "controlnet", "judge": judge_uri} | (extra_tags or {})
    if champion is not None:
        tags["parent.champion_version"] = champion.version
    trained = RFFTConfig.saved_in(candidate)
    params = (flat_params(trained.model_dump(mode="json"), "rfft.") if trained else {}) | (run_params or {})
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-gate", tags=tags):
        if params:
            mlflow.log_params(params)
        mlflow.set_tag("comparison", how)
        mlflow.log_metrics({k: float(v) for k, v in comparison.items() if isinstance(v, int | float | bool)})
        paired = _paired(comparison, gate)  # before registering: a gate that cannot count registers nothing
        version = log_model_folder("controlnet", candidate, name)
        gap = float(comparison.get("hacking_gap_tuned", float("nan")))
        decision = decide(
            name,
            version.version,
            f"available_rate_first_{gate.judge}",
            paired.candidate,
            paired,
            champion.version if champion else None,
            gate,
            extra={
                "judge": judge_uri,
                "baseline": "the champion" if champion else "the base ControlNet",
                "reviewer_delta": comparison["delta"],
                "rfnet_delta": comparison["delta_rfnet"],
                "guard_ok": comparison["guard_ok"],
                "diversity_base": comparison["diversity_base"],
                "diversity_tuned": comparison["diversity_tuned"],
                "hacking_gap_tuned": gap,
                "comparison": how,
            },
            blocked=_blocked(comparison, gap, gate),
        )
        mlflow.log_dict(decision.__dict__, "gate_decision.json")
    if decision_file is not None:
        decision_file.parent.mkdir(parents=True, exist_ok=True)
        decision_file.write_text(json.dumps(decision.__dict__, indent=2, default=str) + "\n")
    return decision


def _blocked(metrics: dict[str, Any], gap: float, gate: ControlNetGateConfig) -> str | None:
    """Why the candidate may not be promoted whatever its gain: a failed quality guard or a hacking gap above the
    bound (a gap is NaN without reviewer verdicts, as in the real world: then the frozen judge's gate decides)."""
    if not metrics["guard_ok"]:
        return "quality guard failed"
    if gap > gate.max_hacking_gap:
        return f"hacking gap {gap:+.3f} above the bound {gate.max_hacking_gap}: the judge is pleased, not the reviewer"
    return None


def refuse_trained_judge(gate: ControlNetGateConfig, judge: Path | str, trained_against: list[str]) -> None:
    """A gate that counts the verdicts of a judge RFFT optimised would pass a ControlNet that fools it."""
    if gate.judge != "rfnet" or not trained_against:
        return
    if not Path(judge).is_dir():
        raise InputError(
            f"the gate counts by RFNet {judge}, which cannot be checked against the judges this ControlNet was "
            "tuned against: give the gate a judge folder"
        )
    if folder_hash(Path(judge)) in trained_against:
        raise InputError(
            f"the gate is asked to count by {judge}, a judge this ControlNet was tuned against: set "
            "generation.gate.judge to reviewer, or give the gate a frozen evaluation judge"
        )


def _paired(metrics: dict[str, Any], gate: ControlNetGateConfig) -> PairedDelta:
    """The paired difference of first-attempt available rates by the gate's judge."""
    delta = "delta_rfnet" if gate.judge == "rfnet" else "delta"
    rates = f"available_rate_first_{gate.judge}"
    if any(math.isnan(float(metrics[k])) for k in (delta, f"{rates}_tuned")):
        raise InputError(
            f"the gate counts by the {gate.judge}, but the comparison has no {gate.judge} verdicts "
            "(the reviewer needs the embedded world's products with their heights)"
        )
    return PairedDelta(
        delta=metrics[delta],
        low=metrics[f"{delta}_ci_low"],
        high=metrics[f"{delta}_ci_high"],
        candidate=metrics[f"{rates}_tuned"],
        baseline=metrics[f"{rates}_base"],
        n=metrics["products"],
        confidence=gate.confidence,
    )
