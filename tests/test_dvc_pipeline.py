"""The DVC pipeline end to end on the quick profile, in a clone of this repository (real dvc, real git)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "models" / "tiny-generator" / "model"

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the whole pipeline: ten minutes on two cores


def _run(args: list[str], cwd: Path) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / '.tracking' / 'mlflow.db'}",
        "TQDM_DISABLE": "1",
    }
    env.pop("RAD_ARTIFACT_ROOT", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _stale(clone: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    status = json.loads(_run(["dvc", "status", "--json"], clone) or "{}")
    return {name.split(":")[-1] for name in status if not name.endswith(".dvc")}


@pytest.mark.skipif(not GENERATOR.exists(), reason="the tiny generator (models/tiny-generator) is not in this checkout")
def test_quick_profile_runs_every_stage_and_reruns_only_what_changed(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    _run(["rad", "feedback", "init", "data/feedback"], clone)
    _run(["dvc", "exp", "run", "-S", "profile=quick"], clone)
    for name in ("rfnet", "rfnet_gate", "generation", "rfft", "rfft_gate", "validation", "rounds", "methods"):
        assert (clone / "metrics" / f"{name}.json").exists(), name
    assert (clone / "reports" / "report.html").stat().st_size > 10_000
    # the judge is tested on the generator's own images apart, and the gate reused rfft evaluate's comparison
    by_source = json.loads((clone / "metrics" / "rfnet.json").read_text())["by_source"]
    assert set(by_source) == {"rf1m-synth", "rf1m-gen"} and by_source["rf1m-gen"]["n"] > 0
    assert json.loads((clone / "metrics" / "rfft_gate.json").read_text())["extra"]["comparison"].startswith("reused")
    (row,) = json.loads((clone / "metrics" / "rounds.json").read_text())["rounds"]  # the quick profile's one round
    assert row["round"] == 1 and row["human_labels"]["method"] > 0 and "hacking_gap_tuned" in row["comparison"]
    assert _stale(clone) == set()
    methods = json.loads((clone / "metrics" / "methods.json").read_text())["methods"]
    assert set(methods) == {"prompts", "sft", "kto", "dpo", "prompts+kto", "rfft"}
    assert all("reviewer_delta" in row or "refused" in row for row in methods.values())

    # one knob of one stage: only that stage and what follows it are stale
    params = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(params.replace("guard: {}", "guard: {min_diversity_ratio: 0.5}"))
    # the rounds and the methods compare under it too
    assert _stale(clone) == {"evaluate_rfft", "register_rfft", "feedback_rounds", "compare_methods"}
    (clone / "params.yaml").write_text(params)

    # a new feedback batch: the stages that read data, not the ones that make the synthetic dataset
    _run(["rad", "data", "synth", "--out", "incoming/batch1", "--n", "12", "--seed", "77"], clone)
    _run(["rad", "feedback", "ingest", "incoming/batch1", "--dvc", "--params", "params.yaml"], clone)
    stale = _stale(clone)
    assert "prepare" in stale and not stale & {"synth", "import", "validate"}
