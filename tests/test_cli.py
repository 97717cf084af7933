"""The CLI commands that no DVC stage runs, end to end on tiny parts: their wiring (options to the API, files
written), which function tests cannot see (`rad generate` once failed on every call this way)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner, Result

from reliable_ad.cli import BUG, app, user_errors
from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, SynthConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.errors import InputError
from reliable_ad.labels import LabelSet
from reliable_ad.models.generator import save_components
from reliable_ad.models.rfnet import RFNet
from reliable_ad.review.queue import read_queue

SMALL = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1}  # the tiny RFNet that training builds
POOL = [{"prompt": "front view of a product placed on a white desktop, grey walls", "image_scale": 0.6}]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, make_components, make_rfnet) -> Path:
    root = tmp_path_factory.mktemp("cli")
    save_components(make_components(), root / "gen")
    make_rfnet().save(root / "judge")
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


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An imported RF1M-synth folder of 16 rows whose first image is truncated (validation quarantines it).
    Shared: tests write only under their own folders, never into it."""
    root = tmp_path_factory.mktemp("truncated") / "ds"
    write_synth(SynthConfig(n=16, seed=3), root)
    import_dataset(root, ImportConfig())
    image = sorted((root / layout.IMAGES_DIR).iterdir())[0]
    image.write_bytes(image.read_bytes()[:40])
    return root


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_recurrent_records_every_attempt(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "recurrent"
    args = (
        *("recurrent", "--generator", str(project / "gen"), "--judge", str(project / "judge"), "--products", "3"),
        *("--out", str(out), "--params", str(project / "params.yaml"), "--queue", str(tmp_path / "queue")),
    )
    refused = CliRunner().invoke(app, list(args))  # the evaluation's products must not become training labels
    assert refused.exit_code == 1 and "evaluation's products" in refused.output and "Traceback" not in refused.output
    _run(*args, "--product-seed", "31")
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


def test_a_catalog_given_to_rad_supplies_every_commands_products(project: Path, tmp_path: Path, write_catalog) -> None:
    catalog = write_catalog(tmp_path / "catalog")
    out = tmp_path / "recurrent"
    args = (
        *("--catalog", str(catalog), "recurrent", "--generator", str(project / "gen"), "--judge"),
        *(str(project / "judge"), "--products", "2", "--out", str(out), "--params", str(project / "params.yaml")),
    )
    _run(*args)
    attempts = pd.read_parquet(out / "attempts.parquet")
    assert attempts["product"].str.startswith("item ").all()
    assert attempts["reviewer_label"].isna().all()  # people label a catalog's images later, not the embedded reviewer
    (catalog / "products.jsonl").write_text('{"image": "photos/item 0.png"}\n')
    refused = CliRunner().invoke(app, list(args))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "products.jsonl:1: field 'title' is missing" in refused.output


def test_ablation_rows_can_be_run_one_at_a_time(project: Path, tiny_shards: Path, tmp_path: Path) -> None:
    common = ["--shards", str(tiny_shards), "--out", str(tmp_path / "runs"), "--params", str(project / "params.yaml")]
    files = ["--metrics", str(tmp_path / "ablation.json"), "--table", str(tmp_path / "ablation.md")]
    _run("rfnet", "ablate", *common, *files, "--variant", "generated only")
    table = _run("rfnet", "ablate", *common, *files, "--variant", "without depth")
    assert list(json.loads((tmp_path / "ablation.json").read_text())) == ["without depth", "generated only"]
    assert "| generated only |" in table and "| without depth |" in table


def test_calibrate_writes_tau_into_the_model(tiny_shards: Path, tmp_path: Path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "model")
    output = _run("rfnet", "calibrate", "--model", str(tmp_path / "model"), "--shards", str(tiny_shards))
    tau = json.loads(output)["threshold"]
    assert RFNet.load(tmp_path / "model").config.acceptance_threshold == pytest.approx(tau)


def test_calibrate_takes_its_source_from_params_unless_told(tiny_shards: Path, tmp_path: Path, make_rfnet) -> None:
    """`rad rfnet calibrate` ignored rfnet.train.calibration_source: tau came from every row, not the ones asked."""
    make_rfnet().save(tmp_path / "model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"rfnet": {"train": {"calibration_source": "rf1m-gen"}}}))
    command = ["rfnet", "calibrate", "--model", tmp_path / "model", "--shards", tiny_shards]
    refused = CliRunner().invoke(app, [str(a) for a in (*command, "--params", tmp_path / "params.yaml")])
    assert refused.exit_code == 1 and "no rows of source 'rf1m-gen'" in refused.output  # tiny_shards has 'ds' only
    assert len(refused.output.splitlines()) == 1
    told = [*command, "--params", tmp_path / "params.yaml", "--source", "ds"]
    assert json.loads(_run(*(str(a) for a in told)))["threshold"] is not None


def test_params_prints_every_setting_in_effect(project: Path) -> None:
    settings = yaml.safe_load(_run("params", "--params", str(project / "params.yaml")))
    assert settings["rfnet"]["train"]["epochs"] == 1  # from the file
    assert settings["rfnet"]["train"]["hflip"] is False and settings["data"]["import"]["separator"] == "\t"
    assert settings["paths"]["experiment"] == "reliable-ad" and "profiles" not in settings


def test_a_failing_validation_exits_1_with_its_report_and_nothing_else(truncated: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "validate", str(truncated), "--out-dir", str(tmp_path / "v")])
    assert result.exit_code == 1 and "FAILED" in result.output and "1 quarantined" in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("error")]  # it printed "error: 1"


def test_real_style_data_needs_only_flags_and_each_refusal_names_its_params_key(tmp_path: Path) -> None:
    """Data as a real release may come: no metadata.jsonl, no depth or saliency maps, 80 px images."""
    root = tmp_path / "release"
    write_synth(SynthConfig(n=8, size=80, seed=4), root)
    (root / layout.METADATA_FILE).unlink()
    for folder in (layout.DEPTH_DIR, layout.SALIENCY_DIR):
        shutil.rmtree(root / folder)

    def rad(*args: str) -> Result:
        return CliRunner().invoke(app, [str(a) for a in args])

    refused = rad("data", "import", root)
    assert refused.exit_code == 1
    assert "set data.import.require_metadata: false (or --no-require-metadata)" in refused.output
    assert rad("data", "import", root, "--no-require-metadata").exit_code == 0
    prepare = ("data", "prepare", root, "--out", tmp_path / "shards")
    refused = rad(*prepare)
    assert "set data.prepare.include_depth: false (or --no-include-depth) to leave depth maps out" in refused.output
    refused = rad(*prepare, "--no-include-depth", "--no-include-saliency")
    assert "expected 64x64 (data.prepare.image_size, --image-size)" in refused.output
    assert "set data.prepare.on_size_mismatch: resize (or --on-size-mismatch resize)" in refused.output
    done = rad(*prepare, "--no-include-depth", "--no-include-saliency", "--on-size-mismatch", "resize")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["resized"] == 8 * 2  # image and product of each row


def test_prepare_leaves_out_what_validation_quarantined(truncated: Path, tmp_path: Path) -> None:
    """`rad data validate` quarantines a truncated image; `rad data prepare` then leaves it out and counts it."""
    root = Path(shutil.copytree(truncated, tmp_path / "ds"))
    assert CliRunner().invoke(app, ["data", "validate", str(root)]).exit_code == 1  # verdict in ROOT/validation
    summary = json.loads(_run("data", "prepare", str(root), "--out", str(tmp_path / "shards")))
    assert summary["rows_quarantined"] == 1 and summary["validation"] == str(root / "validation")
    assert summary["rows_in"] == sum(summary["rows_written"].values()) + 1 == 16


@pytest.mark.parametrize(
    ("error", "user"),
    [
        (InputError("label.txt line 3: label 9 is not one of 1-6"), True),
        (FileNotFoundError(2, "No such file or directory", "reports"), True),  # the file system refused a path
        (KeyError("p_available"), False),  # a bug: not the user's to fix, and no message to act on
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    ],
)
def test_user_errors_are_one_line_anything_else_a_traceback_asking_for_a_report(error: Exception, user: bool) -> None:
    command = typer.Typer()

    @command.command()
    @user_errors
    def fails() -> None:
        raise error

    result = CliRunner().invoke(command, [])
    assert result.exit_code == 1
    if user:
        assert result.output.splitlines() == [f"error: {error}"]
    else:
        assert "Traceback (most recent call last)" in result.output
        assert f"{type(error).__name__}: " in result.output and result.output.splitlines()[-1] == BUG
