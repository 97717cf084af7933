import json

import numpy as np

from reliable_ad.data.synth.products import SynthProducts
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.guard import GuardConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.rfft_eval import (
    background_descriptor,
    compare_generators,
    comparison_key,
    diversity,
    evaluation_run,
    first_attempt_comparison,
    first_attempts_run,
    quality_guard,
)
from reliable_ad.models.generator import load_components

SOURCE = SynthProducts()
POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
EVAL = GenerationEvalConfig(
    products=4, recurrent=RecurrentConfig(batch_size=4, max_attempts=2, steps=3, guidance_scale=2.0)
)


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


def test_base_and_tuned_on_the_same_products_and_seeds(generator, tuned_controlnet, make_judge, tmp_path) -> None:
    def denoiser(cn):
        return Denoiser(load_components(generator, cn), 3, 2.0)

    metrics = compare_generators(
        denoiser(None),
        denoiser(tuned_controlnet),
        make_judge(seed=1),
        POOL,
        EVAL,
        GuardConfig(),
        SOURCE,
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
    same = compare_generators(denoiser(None), denoiser(None), make_judge(seed=1), POOL, EVAL, GuardConfig(), SOURCE)
    assert same["delta"] == 0.0 and same["base_tuned_distance"] == 0.0


def test_the_comparison_key_ignores_what_the_comparison_does_not_use(tmp_path) -> None:
    folders = []
    for name in ("generator", "controlnet", "judge"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights").write_text(name)
        folders.append(tmp_path / name)
    cfg = GenerationEvalConfig(products=8)

    def key(eval_cfg: GenerationEvalConfig) -> str:
        return comparison_key(*folders, eval_cfg, GuardConfig(), 200, 0.95, "rf1m-synth")

    assert key(cfg) == key(cfg.model_copy(update={"calibration_products": 5, "probe_steps": [2]}))
    assert key(cfg) != key(cfg.model_copy(update={"products": 9}))
    before = key(cfg)
    (tmp_path / "judge" / "weights").write_text("another judge")
    assert key(cfg) != before


def test_runs_made_before_give_the_same_comparison(generator, tuned_controlnet, make_judge) -> None:
    """A side handed in (one run shared by several comparisons) changes nothing: every job is seeded."""

    def same(a: dict, b: dict) -> bool:  # NaN (nothing rejected by the judge on 4 products) equals itself here
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    base_denoiser, tuned_denoiser = (
        Denoiser(load_components(generator, cn), 3, 2.0) for cn in (None, tuned_controlnet)
    )
    judge = make_judge(seed=1)
    fresh = compare_generators(base_denoiser, tuned_denoiser, judge, POOL, EVAL, GuardConfig(), SOURCE)
    shared = compare_generators(
        base_denoiser, tuned_denoiser, judge, POOL, EVAL, GuardConfig(), SOURCE,
        known={"base": evaluation_run(base_denoiser, judge, POOL, EVAL, SOURCE)},
    )  # fmt: skip
    assert same(shared, fresh)
    # a tuned side with the base's weights reuses the base's run: what a second run of the base would say
    itself = compare_generators(base_denoiser, base_denoiser, judge, POOL, EVAL, GuardConfig(), SOURCE)
    reused = compare_generators(
        base_denoiser, tuned_denoiser, judge, POOL, EVAL, GuardConfig(), SOURCE, tuned_is_base=True
    )
    assert same(reused, itself) and reused["delta"] == 0.0
    first = first_attempt_comparison(base_denoiser, tuned_denoiser, judge, POOL, 4, 5, EVAL.recurrent, SOURCE)
    handed = first_attempt_comparison(
        base_denoiser, tuned_denoiser, judge, POOL, 4, 5, EVAL.recurrent, SOURCE,
        known={"base": first_attempts_run(base_denoiser, judge, POOL, 4, 5, EVAL.recurrent, SOURCE)},
    )  # fmt: skip
    assert same(handed, first)
