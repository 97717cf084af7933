"""The ControlNet's gate end to end: the comparison made (or reused under its key) and handed to the gate."""

import json
import shutil

import mlflow
import pytest

from reliable_ad import api
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.guard import GuardConfig
from reliable_ad.generation.rfft_eval import comparison_key
from reliable_ad.params import Params
from reliable_ad.registry.models import CHAMPION, by_alias
from reliable_ad.training.rfft import JUDGES_FILE

POOL = [{"prompt": "front view of a product placed on a oak desktop, {} walls", "flag": 1}]
EVAL = GenerationEvalConfig(
    products=4, recurrent=RecurrentConfig(batch_size=4, max_attempts=2, steps=3, guidance_scale=2.0)
)


@pytest.fixture
def params(tmp_path) -> Params:
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    return Params(
        generation={
            "prompts": tmp_path / "pool.json",
            "evaluate": EVAL.model_dump(),
            "gate": {"resamples": 200, "confidence": 0.8},
        }
    )


@pytest.fixture
def judge(tmp_path, make_rfnet):
    make_rfnet(seed=1).save(tmp_path / "judge")
    return tmp_path / "judge"


def _last_run() -> dict:
    return mlflow.search_runs(experiment_names=[Params().paths.experiment], order_by=["start_time DESC"]).iloc[0]


def test_registering_a_controlnet_that_does_not_beat_the_base(params, judge, generator, tracking, tmp_path) -> None:
    decision = api.register_controlnet(params, generator / "controlnet", generator, judge, tmp_path / "d.json")
    assert not decision["promoted"] and "does not exclude" in decision["reason"]
    assert "base ControlNet" in decision["reason"] and _last_run()["tags.comparison"] == "generated here"
    assert by_alias("reliable-controlnet", CHAMPION) is None
    assert json.loads((tmp_path / "d.json").read_text())["promoted"] is False


def test_the_gate_reuses_an_evaluation_of_the_same_key_and_only_that(
    make_comparison, params, judge, generator, tuned_controlnet, tracking, tmp_path
) -> None:
    params.generation.gate.judge = "rfnet"
    key = comparison_key(generator, tuned_controlnet, judge, EVAL, GuardConfig(), 200, 0.8, "rf1m-synth")
    assert key != comparison_key(
        generator, generator / "controlnet", judge, EVAL, GuardConfig(), 200, 0.8, "rf1m-synth"
    )
    earlier = tmp_path / "rfft.json"
    earlier.write_text(json.dumps(make_comparison(comparison_key="another key")))
    decision = api.register_controlnet(params, tuned_controlnet, generator, judge, None, earlier)
    assert not decision["promoted"] and _last_run()["tags.comparison"] == "generated here"  # no gain found anew
    earlier.write_text(json.dumps(make_comparison(comparison_key=key)))  # the judge saw +0.75 under this very key
    decision = api.register_controlnet(params, tuned_controlnet, generator, judge, None, earlier)
    assert decision["promoted"] and _last_run()["tags.comparison"].startswith("reused")


def test_a_second_candidate_is_compared_with_the_champion(
    make_comparison, params, judge, generator, tuned_controlnet, tracking, tmp_path
) -> None:
    params.generation.gate.judge = "rfnet"
    earlier = tmp_path / "rfft.json"
    key = comparison_key(generator, tuned_controlnet, judge, EVAL, GuardConfig(), 200, 0.8, "rf1m-synth")
    earlier.write_text(json.dumps(make_comparison(comparison_key=key)))
    first = api.register_controlnet(params, tuned_controlnet, generator, judge, None, earlier)
    assert first["promoted"]  # no champion: the evaluation against the base ControlNet is reused
    second = api.register_controlnet(params, tuned_controlnet, generator, judge, None, earlier)
    assert not second["promoted"] and second["champion_version"] == first["version"] and second["delta"] == 0.0
    assert _last_run()["tags.comparison"] == "generated here"  # against the champion's files, the same weights
    assert by_alias("reliable-controlnet", CHAMPION).version == first["version"]


def test_a_gate_judge_rfft_tuned_against_is_refused_before_anything_is_generated(
    params, judge, generator, tuned_controlnet, tracking, tmp_path
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(tuned_controlnet, candidate)
    (candidate / JUDGES_FILE).write_text(json.dumps(api.common.judge_from(params, judge).describe()))
    params.generation.gate.judge = "rfnet"
    params.generation.prompts = tmp_path / "no-pool.json"  # generating anything would fail on this instead
    with pytest.raises(ValueError, match="a judge this ControlNet was tuned against"):
        api.register_controlnet(params, candidate, generator, judge, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists() and api.list_models(params, "reliable-controlnet") == []
