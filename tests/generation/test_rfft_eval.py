import json
import shutil

import numpy as np
import pytest
import torch

from reliable_ad.data.hashing import folder_hash
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig, RFFTConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.guard import GuardConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.rfft_eval import (
    background_descriptor,
    compare_generators,
    comparison_key,
    diversity,
    quality_guard,
)
from reliable_ad.judge import Judge
from reliable_ad.models.config import RFNetConfig, TinyGeneratorConfig
from reliable_ad.models.generator import build_tiny_components, load_components, save_components
from reliable_ad.models.rfnet import RFNet
from reliable_ad.registry.config import ControlNetGateConfig
from reliable_ad.registry.controlnet import register_controlnet
from reliable_ad.registry.models import CHAMPION, by_alias, get_version
from reliable_ad.training.rfft import JUDGES_FILE

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
EVAL = GenerationEvalConfig(
    products=4, recurrent=RecurrentConfig(batch_size=4, max_attempts=2, steps=3, guidance_scale=2.0)
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rfft-eval")
    components = build_tiny_components(TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16)))
    save_components(components, root / "gen")
    with torch.no_grad():
        for parameter in components.controlnet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    components.controlnet.save_pretrained(root / "tuned", safe_serialization=True)
    return root


def _judge() -> Judge:
    torch.manual_seed(1)
    return Judge(RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])))


def _earlier(key: str, **changes: object) -> dict[str, object]:
    """An evaluation that says the candidate is far better by the judge (+0.75) and no different by the reviewer."""
    return {
        "comparison_key": key,
        "products": 4,
        "delta": 0.0,
        "delta_ci_low": -0.25,
        "delta_ci_high": 0.25,
        "available_rate_first_reviewer_tuned": 0.5,
        "available_rate_first_reviewer_base": 0.5,
        "delta_rfnet": 0.75,
        "delta_rfnet_ci_low": 0.5,
        "delta_rfnet_ci_high": 1.0,
        "available_rate_first_rfnet_tuned": 1.0,
        "available_rate_first_rfnet_base": 0.25,
        "guard_ok": True,
        "diversity_base": 10.0,
        "diversity_tuned": 10.0,
        **changes,
    }


def test_diversity_sees_collapsed_backgrounds() -> None:
    product = np.zeros((64, 64, 4), np.uint8)
    product[24:40, 24:40, 3] = 255
    rng = np.random.default_rng(0)
    varied = [rng.integers(0, 255, 3, dtype=np.uint8) * np.ones((64, 64, 3), np.uint8) for _ in range(6)]
    same = [np.full((64, 64, 3), 120, np.uint8) for _ in range(6)]
    features = {k: np.stack([background_descriptor(i, product, 4) for i in v]) for k, v in (("v", varied), ("s", same))}
    assert diversity(features["s"]) == 0.0 < diversity(features["v"])


def test_guard_flags_collapse_and_drift_but_not_a_small_change() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, (32, 48)).astype(np.float32)
    guard = GuardConfig()
    assert quality_guard(base, base + rng.normal(0, 1, base.shape).astype(np.float32), guard)["guard_ok"]
    collapsed = quality_guard(base, np.repeat(base[:1], 32, axis=0), guard)
    assert not collapsed["guard_diversity_ok"] and not collapsed["guard_ok"]
    # as diverse as the base, but every sample unrelated to its own base sample (what an over-tuned model did)
    drifted = quality_guard(base, rng.normal(0, 10, base.shape).astype(np.float32), guard)
    assert drifted["guard_diversity_ok"] and not drifted["guard_shift_ok"] and not drifted["guard_ok"]


def test_base_and_tuned_on_the_same_products_and_seeds(folders, tmp_path) -> None:
    def denoiser(cn):
        return Denoiser(load_components(folders / "gen", cn), 3, 2.0)

    metrics = compare_generators(
        denoiser(None),
        denoiser(folders / "tuned"),
        _judge(),
        POOL,
        EVAL,
        GuardConfig(),
        tmp_path / "rfft.json",
        tmp_path / "grid.png",
    )
    written = json.loads((tmp_path / "rfft.json").read_text())
    for key in (
        "available_rate_first_reviewer_base",
        "available_rate_first_reviewer_tuned",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "diversity_base",
        "diversity_tuned",
        "guard_ok",
    ):
        assert key in written
    assert written["delta_ci_low"] <= written["delta"] <= written["delta_ci_high"]
    diverse = metrics["diversity_tuned"] >= 0.75 * metrics["diversity_base"]
    close = metrics["base_tuned_distance"] <= 0.75 * metrics["diversity_base"]
    assert metrics["guard_ok"] == (diverse and close)
    assert (tmp_path / "grid.png").stat().st_size > 500
    # the same base against itself: no difference at all
    same = compare_generators(denoiser(None), denoiser(None), _judge(), POOL, EVAL, GuardConfig())
    assert same["delta"] == 0.0 and same["base_tuned_distance"] == 0.0


def test_registering_a_controlnet_that_does_not_beat_the_base(folders, tracking, tmp_path) -> None:
    decision = register_controlnet(
        folders / "gen" / "controlnet",
        folders / "gen",
        _judge(),
        "test-judge",
        POOL,
        EVAL,
        GuardConfig(),
        ControlNetGateConfig(resamples=200, confidence=0.8),
        decision_file=tmp_path / "d.json",
    )
    assert not decision.promoted and "does not exclude" in decision.reason and "base ControlNet" in decision.reason
    assert "80% interval" in decision.reason  # the gate's own confidence, not a fixed 95%
    assert by_alias("reliable-controlnet", CHAMPION) is None
    assert json.loads((tmp_path / "d.json").read_text())["promoted"] is False


def test_the_gate_reuses_an_evaluation_of_the_same_key_and_only_that(folders, tracking, tmp_path) -> None:
    import mlflow

    gate = ControlNetGateConfig(resamples=200, confidence=0.8, judge="rfnet")
    judge_dir = tmp_path / "judge"
    _judge().model.save(judge_dir)
    key = comparison_key(folders / "gen", folders / "tuned", judge_dir, EVAL, GuardConfig(), 200, 0.8)
    assert key != comparison_key(
        folders / "gen", folders / "gen" / "controlnet", judge_dir, EVAL, GuardConfig(), 200, 0.8
    )
    earlier = _earlier(key)  # reused only under its own key

    def register(given_key: str) -> tuple[bool, str]:
        decision = register_controlnet(
            folders / "tuned", folders / "gen", _judge(), "test-judge", POOL, EVAL, GuardConfig(), gate,
            earlier=earlier, key=given_key,
        )  # fmt: skip
        run = mlflow.search_runs(experiment_names=["reliable-ad"], order_by=["start_time DESC"]).iloc[0]
        return decision.promoted, run["tags.comparison"]

    assert register("another key") == (False, "generated here")  # generated again: the random judge finds no gain
    # the earlier comparison: the judge saw +0.75, the reviewer nothing; the gate counts by whom it is told
    by_reviewer = gate.model_copy(update={"judge": "reviewer"})
    decision = register_controlnet(
        folders / "tuned", folders / "gen", _judge(), "test-judge", POOL, EVAL, GuardConfig(), by_reviewer,
        earlier=earlier, key=key,
    )  # fmt: skip
    assert not decision.promoted and decision.metric == "available_rate_first_reviewer"
    with pytest.raises(ValueError, match="no reviewer verdicts"):
        register_controlnet(
            folders / "tuned", folders / "gen", _judge(), "test-judge", POOL, EVAL, GuardConfig(), by_reviewer,
            earlier={**earlier, "delta": float("nan")}, key=key,
        )  # fmt: skip
    promoted, how = register(key)
    assert promoted and how.startswith("reused")


def test_a_second_candidate_is_compared_with_the_champion(folders, tracking, tmp_path) -> None:
    import mlflow

    gate = ControlNetGateConfig(resamples=200, confidence=0.8, judge="rfnet")
    judge_dir, candidate = tmp_path / "judge", tmp_path / "candidate"
    _judge().model.save(judge_dir)
    shutil.copytree(folders / "tuned", candidate)
    RFFTConfig(beta=0.5).save(candidate)
    key = comparison_key(folders / "gen", candidate, judge_dir, EVAL, GuardConfig(), 200, 0.8)

    def register():
        decision = register_controlnet(
            candidate, folders / "gen", Judge.from_path(judge_dir), str(judge_dir), POOL, EVAL, GuardConfig(), gate,
            earlier=_earlier(key), key=key,
        )  # fmt: skip
        return decision, mlflow.search_runs(experiment_names=["reliable-ad"], order_by=["start_time DESC"]).iloc[0]

    first, _ = register()
    assert first.promoted  # no champion: the evaluation against the base ControlNet is reused
    second, run = register()  # the same weights against the champion: generated here, no gain
    assert not second.promoted and second.champion_version == first.version and second.delta == 0.0
    assert f"against champion v{first.version}" in second.reason
    assert run["tags.comparison"] == "generated here" and run["tags.parent.champion_version"] == first.version
    assert by_alias("reliable-controlnet", CHAMPION).version == first.version
    assert run["tags.model.judge.folder_hash"] == folder_hash(judge_dir)
    assert run["params.rfft.beta"] == "0.5" and run["params.rfft.regularizer"] == "cc"


def test_a_candidate_that_fails_the_quality_guard_is_not_promoted(folders, tracking, tmp_path) -> None:
    judge_dir = tmp_path / "judge"
    _judge().model.save(judge_dir)
    key = comparison_key(folders / "gen", folders / "tuned", judge_dir, EVAL, GuardConfig(), 200, 0.8)
    decision = register_controlnet(
        folders / "tuned", folders / "gen", _judge(), str(judge_dir), POOL, EVAL, GuardConfig(),
        ControlNetGateConfig(resamples=200, confidence=0.8), decision_file=tmp_path / "d.json",
        earlier=_earlier(key, guard_ok=False), key=key,
    )  # fmt: skip
    assert not decision.promoted and decision.reason == "quality guard failed"  # despite the judge's +0.75
    assert by_alias("reliable-controlnet", CHAMPION) is None
    stored = json.loads((tmp_path / "d.json").read_text())
    assert stored["reason"] == "quality guard failed" and stored["extra"]["guard_ok"] is False
    assert get_version("reliable-controlnet", decision.version).tags["gate.reason"] == "quality guard failed"


def test_the_comparison_key_ignores_what_the_comparison_does_not_use(tmp_path) -> None:
    folders = []
    for name in ("generator", "controlnet", "judge"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights").write_text(name)
        folders.append(tmp_path / name)
    cfg = GenerationEvalConfig(products=8)

    def key(eval_cfg: GenerationEvalConfig) -> str:
        return comparison_key(*folders, eval_cfg, GuardConfig(), 200, 0.95)

    assert key(cfg) == key(cfg.model_copy(update={"calibration_products": 5, "probe_steps": [2]}))
    assert key(cfg) != key(cfg.model_copy(update={"products": 9}))
    before = key(cfg)
    (tmp_path / "judge" / "weights").write_text("another judge")
    assert key(cfg) != before


def test_a_gate_asked_to_count_the_judge_rfft_tuned_against_is_refused(folders, tracking, tmp_path) -> None:
    judge_dir, candidate = tmp_path / "judge", tmp_path / "candidate"
    _judge().model.save(judge_dir)
    shutil.copytree(folders / "tuned", candidate)
    (candidate / JUDGES_FILE).write_text(json.dumps(Judge.from_path(judge_dir).describe()))
    gate = ControlNetGateConfig(resamples=200, confidence=0.8, judge="rfnet")
    with pytest.raises(ValueError, match="a judge this ControlNet was tuned against"):
        register_controlnet(
            candidate, folders / "gen", _judge(), str(judge_dir), POOL, EVAL, GuardConfig(), gate,
            decision_file=tmp_path / "d.json",
        )  # fmt: skip
    assert not (tmp_path / "d.json").exists() and by_alias("reliable-controlnet", CHAMPION) is None
    frozen = tmp_path / "frozen-judge"  # another judge, frozen for evaluation: allowed
    torch.manual_seed(3)
    RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])).save(frozen)
    key = comparison_key(folders / "gen", candidate, frozen, EVAL, GuardConfig(), 200, 0.8)
    decision = register_controlnet(
        candidate, folders / "gen", Judge.from_path(frozen), str(frozen), POOL, EVAL, GuardConfig(), gate,
        earlier=_earlier(key), key=key,
    )  # fmt: skip
    assert decision.promoted and decision.metric == "available_rate_first_rfnet"


def test_a_hacking_gap_above_the_bound_blocks_promotion_whatever_the_gain(folders, tracking, tmp_path) -> None:
    judge_dir = tmp_path / "judge"
    _judge().model.save(judge_dir)
    key = comparison_key(folders / "gen", folders / "tuned", judge_dir, EVAL, GuardConfig(), 200, 0.8)
    gained = {"delta": 0.5, "delta_ci_low": 0.25, "delta_ci_high": 0.75, "available_rate_first_reviewer_tuned": 0.8}
    gate = ControlNetGateConfig(resamples=200, confidence=0.8)  # counts by the reviewer
    decision = register_controlnet(
        folders / "tuned", folders / "gen", _judge(), str(judge_dir), POOL, EVAL, GuardConfig(), gate,
        earlier=_earlier(key, **gained, hacking_gap_tuned=0.2), key=key,
    )  # fmt: skip
    assert not decision.promoted and decision.reason.startswith("hacking gap +0.200 above the bound 0.05")
    decision = register_controlnet(
        folders / "tuned", folders / "gen", _judge(), str(judge_dir), POOL, EVAL, GuardConfig(), gate,
        earlier=_earlier(key, **gained, hacking_gap_tuned=0.0), key=key,
    )  # fmt: skip
    assert decision.promoted and decision.metric == "available_rate_first_reviewer"
