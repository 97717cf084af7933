"""Real flow runs (Prefect's test harness) on tiny settings, in a scratch project folder."""

import asyncio
from pathlib import Path

import pytest
import yaml

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.models.generator import save_components

TINY = {
    "data": {
        "synth": {"n": 160, "seed": 3},
        "validate": {"workers": 1, "data_docs": False},
        "prepare": {"samples_per_shard": 100},
        "generated": {"products": 8},
    },
    "rfnet": {
        "train": {
            "epochs": 1,
            "batch_size": 16,
            "lr": 0.001,
            "threads": 1,
            "model": {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1},
        },
        "gate": {"resamples": 200},
    },
    "generation": {
        "prompts": "pool.json",
        "evaluate": {
            "products": 3,
            "calibration_products": 2,
            "probe_steps": [1],
            "probe_thresholds": [0.1],
            "max_false_abort": 1.0,
            "recurrent": {"batch_size": 2, "max_attempts": 2, "steps": 3, "guidance_scale": 2.0},
        },
        "rfft": {
            "steps": 2,
            "batch_size": 2,
            "inference_steps": 3,
            "last_k": 1,
            "products": 3,
            "lr": 0.001,
            "threads": 1,
            "select": {"every": 1, "products": 2},
        },
        "gate": {"resamples": 200},
        "methods": {
            "methods": ["prompts", "kto"],
            "batch": {"products": 3},
            "tune": {"steps": 1, "batch_size": 2, "threads": 1},
            "select": {"products": 2},
        },
    },
    "rounds": {"count": 1, "products": 6, "rfnet_epochs": 1, "unseen_products": 2},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness, make_components, make_rfnet):
    """A scratch project: tiny params, a tiny random generator, a prompt pool, its own MLflow store."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    (root / "pool.json").write_text(
        '[{"prompt": "front view of a product placed on a oak desktop, {} walls", "flag": 1, "image_scale": 0.5}]'
    )
    save_components(make_components(), root / "generator")
    make_rfnet().save(root / "judge")
    return root


@pytest.fixture
def inside(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("RAD_ARTIFACT_ROOT", (project / "artifacts").as_uri())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return project


def test_full_pipeline_then_retrain_on_feedback(inside) -> None:
    from flows.pipeline import full_pipeline, retrain_on_feedback

    summary = full_pipeline(params_path="params.yaml", generator=str(inside / "generator"))
    assert summary["validate"]["rows_in"] == 160
    assert summary["simulate_feedback"]["rows_accepted"] == 8  # the generator's images, reviewer-labelled
    assert summary["prepare"]["rows_in"] == 160 + 8
    assert summary["rfnet_gate"]["promoted"] and "first valid candidate" in summary["rfnet_gate"]["reason"]
    assert "available_rate_first_rfnet" in summary["generation"]
    assert "promoted" in summary["rfft_gate"]
    # a feedback round: the tuned ControlNet's images labelled, the judge retrained, the generator tuned, both gated
    first_round = summary["round_1"]
    assert first_round["round"] == 1 and first_round["labels"] and first_round["human_labels"]["method"] >= 6
    assert {"hacking_gap_tuned", "delta", "available_rate_first_rfnet_tuned"} <= set(first_round["comparison"])
    # people's labels learnt directly: the random generator makes nothing usable, so KTO is refused, saying why
    methods = summary["methods"]["methods"]
    assert methods["prompts"]["human_labels"] == 6 + 2 * 2 and "0 desirable" in methods["kto"]["refused"]
    for produced in (
        "metrics/methods.json",
        "metrics/rfnet.json",
        "metrics/rfnet_gate.json",
        "metrics/generation.json",
        "models/rfft/controlnet",
        "models/rounds/round-1/rfnet/model",
        "models/methods/champion/config.json",  # nothing promoted on the random generator: RFFT's, carried on
        "models/rounds/round-1/update/controlnet",
        "data/rounds/round-1/feedback/manifest.parquet",
    ):
        assert (inside / produced).exists(), produced

    write_synth(SynthConfig(n=24, seed=99), inside / "incoming" / "batch1")
    retrained = retrain_on_feedback(batch="incoming/batch1", params_path="params.yaml")
    assert retrained["ingest"]["status"] == "ingested" and retrained["ingest"]["rows_accepted"] == 24
    # the same round code: the judge warm-started from the champion on all data, gated against it
    assert retrained["round"]["round"] == 1 and "rfnet_promoted" in retrained["round"]
    assert (inside / "models/retrained/round-1/rfnet/model").exists()
    again = retrain_on_feedback(batch="incoming/batch1", params_path="params.yaml")
    assert again["ingest"]["status"] == "already ingested" and "round" not in again


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(read())


def test_a_batch_that_no_longer_exists_fails_without_retries(inside) -> None:
    from flows.pipeline import retrain_on_feedback

    state = retrain_on_feedback(batch="incoming/vanished", params_path="params.yaml", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="does not exist"):
        state.result()
    runs = [r for r in _task_runs(state.state_details.flow_run_id) if r.name.startswith("ingest_feedback")]
    assert len(runs) == 1 and runs[0].run_count == 1


def test_tracking_server_down_is_retried_then_fails_clearly(inside, monkeypatch) -> None:
    from flows.pipeline import register_rfnet
    from prefect import flow

    from reliable_ad.params import load_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")

    @flow
    def register_only():
        return register_rfnet(
            load_params(Path("params.yaml")),
            Path("judge"),
            Path("data/shards"),
            Path("metrics/unused.json"),
        )

    state = register_only(return_state=True)
    assert state.is_failed()
    runs = [r for r in _task_runs(state.state_details.flow_run_id) if r.name.startswith("register_rfnet")]
    assert len(runs) == 1 and runs[0].run_count == 4  # the first try and three retries
    assert not (inside / "metrics" / "unused.json").exists()


def test_generation_sharded_merges_the_shards(inside) -> None:
    from flows.pipeline import evaluate_generation_sharded

    result = evaluate_generation_sharded(
        generator=str(inside / "generator"), judge="judge", products=4, shards=2, params_path="params.yaml"
    )
    assert result["products"] == 4 and result["shards"] == 2 and result["attempts_total"] >= 4
    assert 0.0 <= result["available_rate_first_reviewer"] <= 1.0


def test_a_bad_data_error_carrying_an_http_status_s_digits_is_not_retried(inside) -> None:
    """Sample ids like s0-0000503 carry 503 and 502: such an error is bad data, not a server asking for a retry."""
    from flows.pipeline import TRACKING
    from prefect import flow, task

    tries = []

    @task(**TRACKING)
    def reads_bad_labels() -> None:
        tries.append(1)
        raise ValueError("label.txt line 7: s0-0000503.png has label 9, not one of 1-6 (s0-0000502 too)")

    @flow
    def ingest_only():
        return reads_bad_labels()

    state = ingest_only(return_state=True)
    assert state.is_failed() and len(tries) == 1


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 503 != 200", True),
        ("HTTP/1.1 502 Bad Gateway", True),
        ("504 Gateway Timeout from the proxy", True),
        ("HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded", True),
        ("sample s0-0000503: the product image is truncated", False),
        ("label.txt line 503: unknown label 'foo'", False),
        ("images/s1-0000502.png: 503 x 502 pixels, expected 64 x 64", False),
    ],
)
def test_only_network_trouble_is_transient(message: str, transient: bool) -> None:
    from flows.pipeline import is_transient

    assert is_transient(RuntimeError(message)) is transient
