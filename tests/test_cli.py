"""The CLI commands that no DVC stage runs, end to end on tiny parts: their wiring (options to the API, files
written), which function tests cannot see (`rad generate` once failed on every call this way)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from reliable_ad.cli import app
from reliable_ad.labels import LabelSet
from reliable_ad.models.generator import TinyGeneratorConfig, build_tiny_components, save_components
from reliable_ad.models.rfnet import RFNet, RFNetConfig
from reliable_ad.review.queue import read_queue

SMALL = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1}
POOL = [{"prompt": "front view of a product placed on a white desktop, grey walls", "image_scale": 0.6}]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    save_components(
        build_tiny_components(TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16))), root / "gen"
    )
    RFNet(RFNetConfig(**SMALL, vocabulary=["cm"])).save(root / "judge")
    (root / "pool.json").write_text(json.dumps(POOL))
    params = {
        "rfnet": {"train": {"model": SMALL, "epochs": 1, "batch_size": 16, "lr": 1e-3, "threads": 1}},
        "generation": {
            "prompts": str(root / "pool.json"),
            "recurrent": {"batch_size": 2, "max_attempts": 2, "steps": 3, "threshold": 0.99},
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_recurrent_records_every_attempt(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "recurrent"
    _run(
        "recurrent",
        *("--generator", str(project / "gen"), "--judge", str(project / "judge"), "--products", "3"),
        *("--out", str(out), "--params", str(project / "params.yaml"), "--queue", str(tmp_path / "queue")),
    )
    attempts = pd.read_parquet(out / "attempts.parquet")
    columns = {"product", "attempt", "seed", "prompt", "status", "step_reached", "p_available", "judge_label"}
    assert columns | {"reviewer_label"} <= set(attempts.columns)
    assert attempts["reviewer_label"].notna().all()  # the embedded world's reviewer labels every attempt
    assert attempts.groupby("product")["attempt"].max().le(2).all() and attempts["product"].nunique() == 3

    # every judged attempt is in the review queue, with the judge's verdict and nothing of the reviewer's
    items, rejects = read_queue(tmp_path / "queue", LabelSet())
    assert rejects == [] and len(items) == len(attempts)
    by_name = {f"{a.product}_a{a.attempt}.png": a for a in attempts.itertuples()}
    for item in items:
        attempt = by_name[item.name]
        assert item.p_available == pytest.approx(attempt.p_available) and item.metadata["judge_threshold"] == 0.99
        assert item.metadata["judge_label"] == attempt.judge_label and item.metadata["judge"].startswith("rfnet-")
        assert "reviewer_label" not in item.metadata and item.metadata["height_cm"] > 0


def test_ablation_rows_can_be_run_one_at_a_time(project: Path, tiny_shards: Path, tmp_path: Path) -> None:
    common = ["--shards", str(tiny_shards), "--out", str(tmp_path / "runs"), "--params", str(project / "params.yaml")]
    files = ["--metrics", str(tmp_path / "ablation.json"), "--table", str(tmp_path / "ablation.md")]
    _run("rfnet", "ablate", *common, *files, "--variant", "generated only")
    table = _run("rfnet", "ablate", *common, *files, "--variant", "without depth")
    assert list(json.loads((tmp_path / "ablation.json").read_text())) == ["without depth", "generated only"]
    assert "| generated only |" in table and "| without depth |" in table


def test_calibrate_writes_tau_into_the_model(tiny_shards: Path, tmp_path: Path) -> None:
    RFNet(RFNetConfig(**SMALL)).save(tmp_path / "model")
    output = _run("rfnet", "calibrate", "--model", str(tmp_path / "model"), "--shards", str(tiny_shards))
    tau = json.loads(output)["threshold"]
    assert RFNet.load(tmp_path / "model").config.acceptance_threshold == pytest.approx(tau)
