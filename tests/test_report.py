"""The HTML report: built from real pipeline outputs, readable with inputs missing, and rendered by a browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reliable_ad.cli import app
from reliable_ad.paths import Paths
from reliable_ad.report import build_report, format_value, markdown_table

PATHS = Paths()

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECTIONS = (
    "Dataset",
    "Validation",
    "RFNet",
    "Ablation",
    "Recurrent generation",
    "RFFT",
    "Feedback rounds",
    "Registry decisions",
)
ABLATION_MD = """| variant | macro-F1 | accuracy | AP (available) | paper AP |
|---|---|---|---|---|
| all inputs | 0.612 | 0.700 | 81.25 | 87.58 |
| without depth | 0.587 | 0.675 | 79.50 | 85.31 |
"""
RFNET = {
    "n": 48,
    "accuracy": 0.8125,
    "macro_f1": 0.7431,
    "ap_available": float("nan"),
    "ece": 0.0612,
    "per_class": {
        "available": {"precision": 0.9, "recall": 0.8571, "f1": 0.878, "support": 21},
        "space_mismatch": {"precision": 0.6667, "recall": 0.5, "f1": 0.5714, "support": 4},
    },
    "by_source": {
        "rf1m-gen": {"n": 12, "accuracy": 0.5833, "macro_f1": 0.4321, "ap_available": 0.7654, "ece": 0.1},
        "rf1m-synth": {"n": 36, "accuracy": 0.8889, "macro_f1": 0.8, "ap_available": 0.9, "ece": 0.05},
    },
}
RFFT = {
    "products": 16,
    "available_rate_first_reviewer_base": 0.5625,
    "available_rate_first_reviewer_tuned": 0.8125,
    "delta": 0.25,
    "delta_ci_low": 0.0625,
    "delta_ci_high": 0.4375,
    "diversity_base": 1.234,
    "diversity_tuned": 1.1,
    "guard_ok": True,
}
ROUNDS = {
    "rounds": [
        {
            "round": 1,
            "human_labels": {"method": 1144, "counting": 400},
            "comparison": {
                "available_rate_first_reviewer_base": 0.4271,
                "available_rate_first_reviewer_tuned": 0.6354,
                "delta": 0.2083,
                "delta_ci_low": 0.1146,
                "delta_ci_high": 0.3021,
                "available_rate_first_rfnet_tuned": 0.6771,
                "hacking_gap_tuned": 0.0417,
                "guard_ok": True,
            },
            "unseen": {"delta": 0.1875},
            "controlnet_promoted": True,
        }
    ],
    "human_labels_method": 1144,
}
GATE = {
    "name": "rfnet",
    "version": "3",
    "promoted": False,
    "reason": "<script>alert(1)</script> interval includes the margin",
    "metric": "macro_f1",
    "candidate": 0.7431,
    "champion_version": "2",
    "champion": 0.7302,
    "delta": 0.0129,
    "ci_low": -0.0211,
    "ci_high": 0.0467,
    "margin": 0.0,
    "extra": {"data_hash": "abc123"},
}


def _png(path: Path, seed: int, size: tuple[int, int] = (360, 240)) -> None:
    """A PNG with structure (blocks of colour), like a plot: it compresses, but not to nothing."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks.repeat(20, axis=0).repeat(20, axis=1)).save(path)


def _write(path: Path, payload: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root with some outputs: synth.json from `rad data synth`, hand-written metrics, PNGs.

    Missing on purpose: import/validation metrics, Data Docs, generation, the RFFT grid and the RFFT gate.
    """
    root = tmp_path_factory.mktemp("project")
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(root / "data/rf1m-synth"), "--n", "30"])
    assert result.exit_code == 0, result.output
    _write(root / "metrics/rfnet.json", json.dumps(RFNET))  # NaN as the evaluator writes it
    _png(root / "plots/rfnet/rfnet_evaluation.png", 0)
    _write(root / "reports/rfnet_ablation.md", ABLATION_MD)
    _write(root / "metrics/rfnet_ablation.json", {"all inputs": {"macro_f1": 0.612}})
    _write(root / "metrics/rfft.json", RFFT)
    _write(root / "metrics/rounds.json", ROUNDS)
    _write(root / "metrics/rfnet_gate.json", GATE)
    _write(root / "reports/validation/summary.txt", "manifest: 6/6 expectations passed\n")
    return root


@pytest.fixture(scope="module")
def page(project: Path) -> Path:
    return build_report(project, project / "reports" / "report.html", PATHS, registry=False)


def test_page_holds_the_numbers_and_notes_for_what_is_missing(project: Path, page: Path) -> None:
    html = page.read_text()
    synth = json.loads((project / "data/rf1m-synth/synth.json").read_text())
    for label, count in synth["labels"].items():
        assert re.search(rf"<td[^>]*>{label}</td><td[^>]*>{count}</td>", html), label
    assert f'<td class="num">{synth["splits"]["train"]}</td>' in html
    assert "0.8125" in html and "0.7431" in html and "n/a" in html  # accuracy, macro-F1, NaN AP
    assert "space_mismatch" in html and "0.5714" in html  # per class
    assert re.search(r"<td>rf1m-gen</td><td[^>]*>12</td><td[^>]*>0.5833</td><td[^>]*>0.4321</td>", html)  # per source
    assert "<td>without depth</td>" in html and '<td class="num">85.31</td>' in html  # markdown table as HTML
    assert "0.2500" in html and "0.0625" in html and "holds" in html  # RFFT delta, CI, guard
    assert re.search(r"<td[^>]*>1</td><td[^>]*>1144</td><td[^>]*>0.4271</td><td[^>]*>0.6354</td>", html)  # a round
    assert "0.0417" in html and "0.1875" in html  # its hacking gap, its gain on unseen products
    assert "champion_version" in html and "abc123" in html  # gate JSON with its extra
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html  # autoescaped
    for missing, stage in (
        ("metrics/import.json", "import"),
        ("metrics/validation.json", "validate"),
        ("reports/validation/data_docs/index.html", "validate"),
        ("metrics/generation.json", "evaluate_generation"),
        ("plots/generation/generation_curves.png", "evaluate_generation"),
        ("plots/rfft/before_after.png", "evaluate_rfft"),
        ("metrics/rfft_gate.json", "register_rfft"),
    ):
        assert f"not produced yet: {missing} (run `dvc repro {stage}`)" in html
    for present in ("metrics/rfnet.json", "reports/rfnet_ablation.md", "data/rf1m-synth/synth.json"):
        assert f"not produced yet: {present}" not in html
    assert "registry not read (--no-registry)" in html


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    loads = re.findall(r'(?:src|href)="([^"#][^"]*)"|url\(([^)]*)\)', html)
    assert all(not u.startswith(("http://", "https://", "//")) for pair in loads for u in pair)


def test_empty_root_gives_notes_and_no_tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages:\n  make_data:\n    cmd: x\n    outs: [data/rf1m-synth]\n")
    html = build_report(tmp_path, tmp_path / "r.html", PATHS).read_text()
    assert "not produced yet: data/rf1m-synth/synth.json (run `dvc repro make_data`)" in html  # stage from dvc.yaml
    assert "dvc.yaml has no such stage yet, so run `rad rfnet evaluate` directly" in html
    assert "no tracking store at" in html and not (tmp_path / ".tracking").exists()  # reported, not created


def test_registry_versions_with_gate_tags_and_aliases(tmp_path: Path, tracking: Path) -> None:
    from mlflow.tracking import MlflowClient

    from reliable_ad.registry.gate import Decision
    from reliable_ad.registry.models import CHAMPION
    from reliable_ad.registry.tracking import setup

    setup(PATHS.experiment)
    client = MlflowClient()
    client.create_registered_model("rfnet")
    version = client.create_model_version("rfnet", source=str(tmp_path), run_id=None)
    decision = Decision("rfnet", str(version.version), True, "first valid candidate", "macro_f1", 0.6543)
    for key, value in decision.tags().items():
        client.set_model_version_tag("rfnet", version.version, key, value)
    client.set_registered_model_alias("rfnet", CHAMPION, version.version)

    html = build_report(tmp_path, tmp_path / "r.html", PATHS).read_text()
    assert "<caption>rfnet</caption>" in html and "<td>champion</td>" in html
    assert "first valid candidate" in html and "0.6543" in html and ">yes<" in html
    assert "No versions of <code>reliable-controlnet</code> registered." in html


def test_without_a_tracking_variable_the_page_reads_the_store_under_its_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report hands the registry the URI of root/.tracking; the working folder's store is not read."""
    from mlflow.tracking import MlflowClient

    from reliable_ad.registry.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / ".tracking").mkdir(parents=True)
    elsewhere.mkdir()
    store = MlflowClient(tracking_uri=tracking_uri(project), registry_uri=tracking_uri(project))
    store.create_registered_model("rfnet")
    store.create_model_version("rfnet", source=str(tmp_path), run_id=None)
    monkeypatch.chdir(elsewhere)

    html = build_report(project, tmp_path / "r.html", PATHS).read_text()
    assert "<caption>rfnet</caption>" in html and not (elsewhere / ".tracking").exists()
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_cli_writes_the_page(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli" / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--root", str(project), "--no-registry"])
    assert result.exit_code == 0, result.output
    assert "0.8125" in out.read_text()


def test_helpers() -> None:
    header, rows, other = markdown_table("Ablation\n\n" + ABLATION_MD)
    assert header[0] == "variant" and rows[1][0] == "without depth" and other == ["Ablation"]
    assert format_value(float("nan")) == "n/a" and format_value(True) == "yes" and format_value(0.5) == "0.5000"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (apt-get install -y chromium)")
def test_chromium_renders_the_page(page: Path, tmp_path: Path) -> None:
    """What a reader sees: the browser's DOM after rendering, and a screenshot that is not blank."""
    flags = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90, check=True
    ).stdout
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom
    assert "0.8125" in dom and "not produced yet: metrics/generation.json" in dom

    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True,
        timeout=90,
        check=True,
        cwd=tmp_path,
    )
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        assert len(set(image.convert("L").getdata())) > 16  # text, tables and the figure, not one colour
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_the_last_review_pull_with_its_judge_drift(tmp_path: Path) -> None:
    confusion = {
        "available": {"available": 3, "size_mismatch": 4},
        "size_mismatch": {"available": 1, "size_mismatch": 2},
    }
    pulled = {
        "project": 1,
        "tasks_annotated": 11,
        "rows": 10,
        "held": 1,
        "status": "ingested",
        "annotators": {"tasks_multi": 2, "fleiss_kappa": 0.4321},
        "judge": {"judged": 10, "judge_accept_precision": 0.4286, "judge_drift": True, "confusion": confusion},
    }
    _write(tmp_path / "metrics/review.json", pulled)
    html = build_report(tmp_path, tmp_path / "report.html", PATHS, registry=False).read_text()
    assert "<h2>Human review</h2>" in html and '<span class="fail">flagged</span>' in html
    assert re.search(r"<th>fleiss_kappa</th><td[^>]*>0.4321</td>", html)
    assert re.search(r"<td[^>]*>available</td><td[^>]*>3</td><td[^>]*>4</td>", html)
    empty = build_report(tmp_path / "none", tmp_path / "empty.html", PATHS, registry=False).read_text()
    assert "not produced yet: metrics/review.json" in empty


def test_the_cost_per_usable_image_per_generator_and_scheduler(tmp_path: Path) -> None:
    cost = {
        "base": {
            "plain": {"unet_evals_per_usable": 61.25, "seconds_per_usable": 1.5, "usable_images": 80},
            "steering": {"unet_evals_per_usable": 44.5, "seconds_per_usable": 1.25, "usable_images": 82},
        },
        "rfft": {"plain": {"unet_evals_per_usable": 52.75, "seconds_per_usable": 1.375, "usable_images": 84}},
    }
    generation = {
        "usable_per_unet_eval_ratio_steering_vs_plain": 1.3764,
        "unet_evals_per_usable_base_plain": 61.25,
        "seconds_per_usable_base_plain": 1.5,
        "cost_per_usable_image": cost,
        "probe": {"base": {"out_of_fold_auc": {"4": {"x0_judge": 0.5612, "probe": 0.7851, "both": 0.7903}}}},
    }
    _write(tmp_path / "metrics/generation.json", generation)
    html = build_report(tmp_path, tmp_path / "report.html", PATHS, registry=False).read_text()
    assert "Cost per usable image" in html
    assert re.search(r"<td>base</td><td>steering</td><td[^>]*>44.5000</td><td[^>]*>1.2500</td><td[^>]*>82</td>", html)
    assert re.search(r"<td>rfft</td><td>plain</td><td[^>]*>52.7500</td>", html)
    assert re.search(r"<th>usable_per_unet_eval_ratio_steering_vs_plain</th><td[^>]*>1.3764</td>", html)
    assert "<th>unet_evals_per_usable_base_plain</th>" not in html  # in the grid, not again in the headline
    assert re.search(r"<td>base</td><td[^>]*>4</td><td[^>]*>0.5612</td><td[^>]*>0.7851</td><td[^>]*>0.7903</td>", html)


def test_the_methods_table_counted_by_the_reviewer_with_each_grid(tmp_path: Path) -> None:
    from PIL import Image

    row = {"reviewer_rate_base": 0.47, "reviewer_rate_tuned": 0.7344, "reviewer_delta": 0.2644, "guard_ok": True,
           "reviewer_delta_ci_low": 0.19, "reviewer_delta_ci_high": 0.33, "human_labels": 1192}  # fmt: skip
    metrics = {"batch": {"rows": 1000}, "methods": {"prompts+kto": row}, "registered": {"method": "prompts+kto"}}
    _write(tmp_path / "metrics/methods.json", metrics)
    (tmp_path / "models/methods/prompts-kto").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "models/methods/prompts-kto/grid.png")
    html = build_report(tmp_path, tmp_path / "report.html", PATHS, registry=False).read_text()
    assert "<h2>Learning from people's labels</h2>" in html
    assert re.search(r"<td[^>]*>prompts\+kto</td><td[^>]*>1192</td><td[^>]*>0.4700</td><td[^>]*>0.7344</td>", html)
    assert 'alt="prompts+kto: base (above)' in html and "data:image/png;base64," in html
