import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reliable_ad.data.synth.products import SynthProducts
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig, SteeringConfig
from reliable_ad.generation.cost import Candidate
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.evaluate import evaluate_generation
from reliable_ad.generation.probe import ModelVersions, Probe, ProbeError
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.judge import JudgeOutput, RFNetJudge

REQUIRED = (
    "available_rate_first_rfnet",
    "available_rate_first_reviewer",
    "mean_attempts",
    "unet_evals_per_accept",
    "abandoned_share",
    "accepts_per_min_ratio_refill_vs_whole_batch",
    "accepts_per_call_ratio_refill_vs_whole_batch",
    "unet_evals_ratio_early_vs_plain",
    "false_abort_rate",
)
POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
RECURRENT = RecurrentConfig(batch_size=2, max_attempts=2, steps=3, guidance_scale=2.0, threshold=0.1)


@pytest.fixture(scope="module")
def components(make_components):
    return make_components()


@pytest.fixture(scope="module")
def rfnet(make_rfnet):
    return make_rfnet()


def _evaluate(components, rfnet, cfg: GenerationEvalConfig, folder):
    return evaluate_generation(
        Denoiser(components, steps=3, guidance_scale=2.0),
        RFNetJudge(rfnet),
        POOL,
        cfg,
        SynthProducts(),
        folder / "generation.json",
        folder / "plots",
        folder / "attempts.parquet",
    )


def test_evaluation_runs_the_three_schedulers_on_the_same_jobs(components, rfnet, tmp_path) -> None:
    cfg = GenerationEvalConfig(
        products=4,
        calibration_products=3,
        probe_steps=[1, 2],
        probe_thresholds=[0.0, 0.5, 1.01],
        max_false_abort=1.0,
        recurrent=RECURRENT,
    )
    metrics = _evaluate(components, rfnet, cfg, tmp_path)
    written = json.loads((tmp_path / "generation.json").read_text())
    for key in REQUIRED:
        assert key in written, key
    assert set(metrics["runs"]) == {"plain", "early", "whole_batch"}
    runs = metrics["runs"]
    # same jobs, so the same slot-steps; refilling packs them into no more batched calls
    assert runs["plain"]["unet_evals"] == runs["whole_batch"]["unet_evals"]
    assert 0 < runs["plain"]["unet_calls"] <= runs["whole_batch"]["unet_calls"]
    attempts = pd.read_parquet(tmp_path / "attempts.parquet")
    plain = attempts[attempts.run == "plain"]
    whole = attempts[attempts.run == "whole_batch"]
    assert sorted(zip(plain["product"], plain["attempt"], plain["seed"], strict=True)) == sorted(
        zip(whole["product"], whole["attempt"], whole["seed"], strict=True)
    )
    assert (tmp_path / "plots" / "generation_curves.png").stat().st_size > 1000
    assert 0.0 <= metrics["false_abort_rate"] <= 1.0
    curves = json.loads((tmp_path / "plots" / "cumulative_available.json").read_text())
    assert all(row["available_rate_reviewer"] <= row["available_rate"] for row in curves)
    last_plain = [row for row in curves if row["run"] == "plain"][-1]
    assert last_plain["available_rate_reviewer"] == pytest.approx(runs["plain"]["final_available_rate_reviewer"])


def test_without_a_calibrated_check_the_early_figures_are_nan_not_missing(components, rfnet, tmp_path) -> None:
    """A threshold above 1 aborts every attempt: no false-abort budget of 0 allows that (or, with no accepted
    calibration image, nothing is measurable), so no early run happens; the keys are still written."""
    cfg = GenerationEvalConfig(
        products=2,
        calibration_products=2,
        probe_steps=[1],
        probe_thresholds=[1.01],
        max_false_abort=0.0,
        recurrent=RECURRENT,
    )
    metrics = _evaluate(components, rfnet, cfg, tmp_path)
    written = json.loads((tmp_path / "generation.json").read_text())
    assert "early" not in metrics["runs"] and "skipped" in written["early_rejection"]
    for key in REQUIRED:
        assert key in written, key
    for key in ("unet_evals_ratio_early_vs_plain", "false_abort_rate", "final_available_rate_early"):
        assert math.isnan(written[key]), key


class HashJudge:
    """A judge whose p(available) is a fixed pseudo-random function of the image: verdicts of every kind, the
    same image always judged alike."""

    threshold = 0.5
    labels = ("available", "space_mismatch")

    def __call__(self, images, products, captions):
        p = torch.tensor([float(image.astype(np.float64).sum() * 0.6180339887) % 1.0 for image in images])
        return JudgeOutput(["available" if v >= 0.5 else "space_mismatch" for v in p.tolist()], p, p[:, None])


# every scheduler runs and the probe trains: 12 calibration products, a threshold that aborts nothing
PROBED = GenerationEvalConfig(
    products=3,
    calibration_products=12,
    probe_steps=[2],
    probe_thresholds=[0.0],
    probe_c=1.0,
    probe_folds=2,
    steering=SteeringConfig(particles=2, resample_at=[0.5], survivors=[1]),
    recurrent=RecurrentConfig(batch_size=4, max_attempts=2, steps=4, guidance_scale=2.0),
)


def test_the_probe_is_trained_saved_and_the_cost_per_usable_image_compared_for_both_generators(
    components, make_components, tmp_path
) -> None:
    cfg = PROBED
    tuned = make_components(seed=9)
    versions = ModelVersions("gen", "cn-base", "judge")
    tuned_versions = ModelVersions("gen", "cn-rfft", "judge")
    metrics = evaluate_generation(
        Denoiser(components, steps=4, guidance_scale=2.0),
        HashJudge(),
        POOL,
        cfg,
        SynthProducts(),
        tmp_path / "generation.json",
        tmp_path / "plots",
        tmp_path / "attempts.parquet",
        versions=versions,
        probes=tmp_path / "probes",
        tuned=Candidate("rfft_", Denoiser(tuned, steps=4, guidance_scale=2.0), tuned_versions),
    )
    assert set(metrics["runs"]) == {
        "plain",
        "early",
        "whole_batch",
        "steering",
        "rfft_plain",
        "rfft_early",
        "rfft_steering",
    }
    for name, expected in (("base", versions), ("rfft", tuned_versions)):
        probe = Probe.load(tmp_path / "probes" / name)
        probe.check(expected, 4)
        assert probe.steps == [2] and set(probe.report["out_of_fold_auc"]["2"]) == {"x0_judge", "probe", "both"}
    written = json.loads((tmp_path / "generation.json").read_text())
    for generator in ("base", "rfft"):
        for scheduler in ("plain", "early", "steering"):
            run = metrics["runs"][("rfft_" if generator == "rfft" else "") + scheduler]
            expected = run["unet_evals"] / run["usable_images"] if run["usable_images"] else None
            value = written[f"unet_evals_per_usable_{generator}_{scheduler}"]
            assert value == pytest.approx(expected) if expected else math.isnan(value)
    assert written["cost_per_usable_image"]["rfft"]["steering"]["usable_images"] >= 0
    assert written["probe_overhead_share"] > 0  # steering scored by the probe
    for key in ("usable_per_unet_eval_ratio_steering_vs_plain", "unet_evals_per_usable_ratio_rfft_best_vs_base_plain"):
        assert key in written
    attempts = pd.read_parquet(tmp_path / "attempts.parquet")
    assert set(attempts.run) == set(metrics["runs"])


def test_a_tuned_generator_with_the_base_weights_reuses_the_base_runs_and_probe(components, tmp_path) -> None:
    """RFFT's selection kept step 0: the tuned side is the base's images, its probe saved under its own name."""
    cfg = PROBED
    base = Denoiser(components, steps=4, guidance_scale=2.0)
    tuned_versions = ModelVersions("gen", "cn-rfft", "judge")
    metrics = evaluate_generation(
        base, HashJudge(), POOL, cfg, SynthProducts(), tmp_path / "generation.json", tmp_path / "plots",
        tmp_path / "attempts.parquet",
        versions=ModelVersions("gen", "cn-base", "judge"), probes=tmp_path / "probes",
        tuned=Candidate("rfft_", base, tuned_versions), tuned_is_base=True,
    )  # fmt: skip
    assert {"rfft_plain", "rfft_early", "rfft_steering"} <= set(metrics["runs"])
    for scheduler in ("plain", "early", "steering"):
        assert json.dumps(metrics["runs"][f"rfft_{scheduler}"]) == json.dumps(metrics["runs"][scheduler])  # NaN too
    probe = Probe.load(tmp_path / "probes" / "rfft")
    probe.check(tuned_versions, 4)
    with pytest.raises(ProbeError):
        probe.check(ModelVersions("gen", "cn-base", "judge"), 4)  # the copy names the tuned models only
    weights = [(tmp_path / "probes" / name / "probe.safetensors").read_bytes() for name in ("base", "rfft")]
    assert weights[0] == weights[1]
