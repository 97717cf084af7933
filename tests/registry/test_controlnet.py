"""The ControlNet gate, handed comparisons: whose verdicts count, the quality guard, the hacking-gap bound, the
refusal of a judge RFFT tuned against, and what the run records."""

import json

import pytest
from mlflow import MlflowClient

from reliable_ad.data.hashing import folder_hash
from reliable_ad.generation.config import RFFTConfig
from reliable_ad.paths import Paths
from reliable_ad.registry.config import ControlNetGateConfig
from reliable_ad.registry.controlnet import refuse_trained_judge, register_controlnet
from reliable_ad.registry.models import CHAMPION, by_alias, get_version

EXPERIMENT = Paths().experiment
BY_REVIEWER = ControlNetGateConfig(resamples=200, confidence=0.8)
BY_RFNET = BY_REVIEWER.model_copy(update={"judge": "rfnet"})


def _register(candidate, generator, metrics, gate, champion=None, **kw):
    return register_controlnet(candidate, generator, "judge", metrics, "given", champion, gate, EXPERIMENT, **kw)


def test_the_gate_counts_by_whom_it_is_told(make_comparison, generator, tuned_controlnet, tracking) -> None:
    by_reviewer = _register(tuned_controlnet, generator, make_comparison(), BY_REVIEWER)
    assert not by_reviewer.promoted and by_reviewer.metric == "available_rate_first_reviewer"
    assert "80% interval" in by_reviewer.reason and "base ControlNet" in by_reviewer.reason  # its own confidence
    with pytest.raises(ValueError, match="no reviewer verdicts"):
        _register(tuned_controlnet, generator, make_comparison(delta=float("nan")), BY_REVIEWER)
    by_rfnet = _register(tuned_controlnet, generator, make_comparison(), BY_RFNET)
    assert by_rfnet.promoted and by_rfnet.metric == "available_rate_first_rfnet"


def test_a_candidate_that_fails_the_quality_guard_is_not_promoted(
    make_comparison, generator, tuned_controlnet, tracking, tmp_path
):
    decision = _register(
        tuned_controlnet, generator, make_comparison(guard_ok=False), BY_RFNET, decision_file=tmp_path / "d.json"
    )
    assert not decision.promoted and decision.reason == "quality guard failed"  # despite the judge's +0.75
    assert by_alias("reliable-controlnet", CHAMPION) is None
    stored = json.loads((tmp_path / "d.json").read_text())
    assert stored["reason"] == "quality guard failed" and stored["extra"]["guard_ok"] is False
    assert get_version("reliable-controlnet", decision.version).tags["gate.reason"] == "quality guard failed"


def test_a_hacking_gap_above_the_bound_blocks_promotion_whatever_the_gain(
    make_comparison, generator, tuned_controlnet, tracking
):
    gained = {"delta": 0.5, "delta_ci_low": 0.25, "delta_ci_high": 0.75, "available_rate_first_reviewer_tuned": 0.8}
    decision = _register(tuned_controlnet, generator, make_comparison(**gained, hacking_gap_tuned=0.2), BY_REVIEWER)
    assert not decision.promoted and decision.reason.startswith("hacking gap +0.200 above the bound 0.05")
    decision = _register(tuned_controlnet, generator, make_comparison(**gained, hacking_gap_tuned=0.0), BY_REVIEWER)
    assert decision.promoted and decision.metric == "available_rate_first_reviewer"


def test_the_run_records_the_rfft_settings_the_champion_and_the_judge(
    make_comparison, generator, tuned_controlnet, tracking, tmp_path
):
    import shutil

    candidate = tmp_path / "candidate"
    shutil.copytree(tuned_controlnet, candidate)
    RFFTConfig(beta=0.5).save(candidate)
    first = _register(candidate, generator, make_comparison(), BY_RFNET)
    champion = by_alias("reliable-controlnet", CHAMPION)
    second = register_controlnet(
        candidate, generator, str(generator), make_comparison(), "given", champion, BY_RFNET, EXPERIMENT
    )
    assert second.champion_version == first.version and f"against champion v{first.version}" in second.reason
    run = MlflowClient().get_run(get_version("reliable-controlnet", second.version).run_id)
    assert run.data.tags["comparison"] == "given" and run.data.tags["parent.champion_version"] == first.version
    assert run.data.tags["model.judge.folder_hash"] == folder_hash(generator)  # a judge folder is hashed
    assert run.data.params["rfft.beta"] == "0.5" and run.data.params["rfft.regularizer"] == "cc"


def test_a_gate_judge_that_rfft_tuned_against_is_refused(tmp_path) -> None:
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "weights").write_text("the training judge")
    tuned_against = [folder_hash(tmp_path / "judge")]
    with pytest.raises(ValueError, match="a judge this ControlNet was tuned against"):
        refuse_trained_judge(BY_RFNET, tmp_path / "judge", tuned_against)
    with pytest.raises(ValueError, match="give the gate a judge folder"):
        refuse_trained_judge(BY_RFNET, "rfnet@champion", tuned_against)
    refuse_trained_judge(BY_REVIEWER, tmp_path / "judge", tuned_against)  # the reviewer counts: nothing to refuse
    (tmp_path / "frozen").mkdir()
    (tmp_path / "frozen" / "weights").write_text("a frozen evaluation judge")
    refuse_trained_judge(BY_RFNET, tmp_path / "frozen", tuned_against)
