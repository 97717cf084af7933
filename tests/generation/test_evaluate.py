import json

import pandas as pd

from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.evaluate import evaluate_generation
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.judge import Judge
from reliable_ad.models.generator import TinyGeneratorConfig, build_tiny_components
from reliable_ad.models.rfnet import RFNet, RFNetConfig

REQUIRED = (
    "available_rate_first_rfnet",
    "available_rate_first_reviewer",
    "mean_attempts",
    "unet_evals_per_accept",
    "abandoned_share",
    "accepts_per_min_ratio_refill_vs_whole_batch",
    "accepts_per_call_ratio_refill_vs_whole_batch",
)


def test_evaluation_runs_the_three_schedulers_on_the_same_jobs(tmp_path) -> None:
    components = build_tiny_components(TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16)))
    judge = Judge(RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])))
    cfg = GenerationEvalConfig(
        products=4,
        calibration_products=3,
        probe_steps=[1, 2],
        probe_thresholds=[0.0, 0.5, 1.01],
        max_false_abort=1.0,
        recurrent=RecurrentConfig(batch_size=2, max_attempts=2, steps=3, guidance_scale=2.0, threshold=0.1),
    )
    pool = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
    metrics = evaluate_generation(
        Denoiser(components, steps=3, guidance_scale=2.0),
        judge,
        pool,
        cfg,
        tmp_path / "generation.json",
        tmp_path / "plots",
        tmp_path / "attempts.parquet",
    )
    written = json.loads((tmp_path / "generation.json").read_text())
    for key in (*REQUIRED, "unet_evals_ratio_early_vs_plain", "false_abort_rate"):
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
