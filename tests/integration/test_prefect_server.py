"""Flows and events against a real Prefect server (`prefect server start`), started here and stopped at teardown.

Independent of tests/flows' session harness: this module points the client at its own server through the
environment (for subprocesses) and a settings context (for this process), which wins over a harness that an
earlier module left active.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.integration.live_servers import Servers, clean_env, free_port, log_tail, stop

pytestmark = pytest.mark.integration

FEEDBACK_EVENT = "reliable-ad.feedback.batch"
# periodic loops that a flow run and an event do not need: off, so the server starts faster on 2 cores
IDLE_SERVICES = [
    "SCHEDULER",
    "LATE_RUNS",
    "FOREMAN",
    "PAUSE_EXPIRATIONS",
    "CANCELLATION_CLEANUP",
    "REPOSSESSOR",
    "DB_VACUUM",
]

T = TypeVar("T")


def _server_env(home: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in IDLE_SERVICES},
        **extra,
    )


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on a free port (SQLite under its own PREFECT_HOME); this process is pointed at it."""
    import prefect.settings

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    servers = Servers()
    try:
        servers.start(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=_server_env(home),
            health_url=f"{api}/health",
            log=home / "server.log",
            cwd=home,
            timeout=180,
        )
        client_home = tmp_path_factory.mktemp("prefect-client")
        _flush_background_senders()  # they keep the server they were started for: a harness's, maybe
        ours = prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: api})
        with pytest.MonkeyPatch.context() as env, ours:
            env.setenv("PREFECT_API_URL", api)
            env.setenv("PREFECT_HOME", str(client_home))
            try:
                yield api
            finally:
                _flush_background_senders()  # send what is ours to our server; later tests start their own
    finally:
        servers.close()


def _flush_background_senders() -> None:
    """Send what Prefect's event and log workers hold, and stop them (the next use starts fresh ones).

    One events worker serves a process and reads the API address once, when it starts: one started for another
    server (tests/flows' harness, earlier in the session) would send this module's task-run events there.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=30)


def _read(call: Callable[[Any], Any]) -> Any:
    """Run `await call(client)` with a client of the configured API, and return what it gives."""
    from prefect.client.orchestration import get_client

    async def go() -> Any:
        async with get_client() as client:
            return await call(client)

    return asyncio.run(go())


def _eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 45.0) -> T:
    """The server records task runs and events from its event stream, a moment after they happen: poll."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_a_failed_flow_run_and_its_task_run_are_recorded_on_the_server(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import retrain_on_feedback
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAD_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    (tmp_path / "params.yaml").write_text("{}\n")

    async def api_url(client: Any) -> str:
        return str(client.api_url)

    assert _read(api_url).rstrip("/") == prefect_api  # this process talks to our server, not to a harness

    state = retrain_on_feedback(batch="incoming/vanished", params_path="params.yaml", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="does not exist"):
        state.result()
    flow_run_id = state.state_details.flow_run_id

    async def flow_run(client: Any) -> Any:
        return await client.read_flow_run(flow_run_id)

    run = _eventually(lambda: _read(flow_run), lambda r: r.state is not None and r.state.is_failed())
    assert run.state.is_failed() and run.run_count == 1
    flow = _read(lambda client: client.read_flow(run.flow_id))
    assert flow.name == "retrain-on-feedback"
    assert run.parameters["batch"] == "incoming/vanished"

    async def task_runs(client: Any) -> list[Any]:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return [r for r in runs if r.name.startswith("ingest_feedback")]

    ingest = _eventually(lambda: _read(task_runs), lambda rs: len(rs) == 1 and rs[0].state.is_failed())
    assert len(ingest) == 1, ingest
    assert ingest[0].state.is_failed() and ingest[0].run_count == 1  # bad data: failed at once, no retries


def test_announcing_a_feedback_batch_reaches_the_server_as_an_event(prefect_api: str, tmp_path: Path) -> None:
    from prefect.events.filters import EventFilter, EventNameFilter

    from reliable_ad.data.feedback import folder_hash

    batch = tmp_path / "incoming" / "batch1"
    batch.mkdir(parents=True)
    (batch / "label.txt").write_text("a.png\t1\n")
    (batch / "metadata.jsonl").write_text('{"image": "a.png", "prompt": "p", "title": "t"}\n')
    digest = folder_hash(batch)

    rad = Path(sys.executable).with_name("rad")
    command = [str(rad)] if rad.exists() else [sys.executable, "-c", "from reliable_ad.cli import app; app()"]
    done = subprocess.run(
        [*command, "feedback", "announce", str(batch)],
        env=clean_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "prefect-home")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said == {"event": FEEDBACK_EVENT, "server": prefect_api, "batch_hash": digest}

    async def events(client: Any) -> list[Any]:
        # limit: the client's default (100) is above what the 3.9 server accepts (50) and gets a 422
        page = await client.read_events(filter=EventFilter(event=EventNameFilter(name=[FEEDBACK_EVENT])), limit=50)
        return [e for e in page.events if e.payload.get("batch_hash") == digest]

    found = _eventually(lambda: _read(events), lambda es: len(es) > 0)
    assert len(found) == 1, "the server has not stored the announced event"
    event = found[0]
    assert event.resource.id == f"reliable-ad.feedback.{digest[:12]}"
    assert event.payload["batch"] == str(batch.resolve())


def test_a_pulled_review_batch_triggers_the_served_retrain_deployment(
    prefect_api: str, label_studio: Any, tmp_path: Path
) -> None:
    """Served deployments (flows/deploy.py), `rad review pull --announce`, the triggered retrain run, end to end."""
    import yaml
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from reliable_ad.data.config import ImportConfig, SynthConfig
    from reliable_ad.data.rf1m import import_dataset
    from reliable_ad.data.synth.writer import write_synth
    from reliable_ad.labels import RF1M_LABELS
    from reliable_ad.review.client import LabelStudio
    from reliable_ad.review.queue import find_project, verdict_result

    project = label_studio.document_root / "prefect-retrain"  # below the served root: the queue is there
    write_synth(SynthConfig(n=160, seed=3), project / "data" / "rf1m-synth")
    import_dataset(project / "data" / "rf1m-synth", ImportConfig(), project / "data" / "manifest" / "manifest.parquet")
    write_synth(SynthConfig(n=8, seed=71), project / "queue")
    review = {"url": label_studio.url, "project": "prefect retrain", "document_root": str(label_studio.document_root)}
    tiny = {
        "data": {"validate": {"workers": 1, "data_docs": False}, "prepare": {"samples_per_shard": 100}},
        "rfnet": {
            "train": {"epochs": 1, "batch_size": 16, "threads": 1, "model": {"width": 32, "tiny_channels": [8, 16]}},
            "gate": {"resamples": 200},
        },
        "review": review,
    }
    (project / "params.yaml").write_text(yaml.safe_dump(tiny))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    root = Path(__file__).resolve().parents[2]
    env = clean_env(
        PREFECT_HOME=str(tmp_path / "client"),
        PREFECT_API_URL=prefect_api,
        PYTHONPATH=os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # dvc
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        RAD_ARTIFACT_ROOT=(tmp_path / "artifacts").as_uri(),
        LABEL_STUDIO_API_KEY=label_studio.token,
    )
    serve = "from flows.deploy import deployments; from prefect import serve; serve(*deployments(generator=None))"
    with (tmp_path / "serve.log").open("wb") as log:
        serving = subprocess.Popen(
            [sys.executable, "-c", serve], env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        async def deployment(client: Any) -> list[Any]:
            name = DeploymentFilter(name=DeploymentFilterName(any_=["retrain-on-feedback"]))
            return list(await client.read_deployments(deployment_filter=name))

        served = _eventually(lambda: _read(deployment), lambda ds: len(ds) == 1, timeout=120)
        assert len(served) == 1, f"the deployment was not served:\n{log_tail(tmp_path / 'serve.log')}"

        client = LabelStudio(label_studio.url, label_studio.token)
        rad = Path(sys.executable).with_name("rad")
        command = [str(rad)] if rad.exists() else [sys.executable, "-c", "from reliable_ad.cli import app; app()"]
        run = functools.partial(subprocess.run, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        pushed = run([*command, "review", "push", "queue", "--params", "params.yaml"])
        assert pushed.returncode == 0, pushed.stderr
        truth = dict(line.split("\t") for line in (project / "queue" / "label.txt").read_text().splitlines())
        for task in client.export(find_project(client, "prefect retrain"), all_tasks=True):
            client.annotate(task["id"], verdict_result(RF1M_LABELS[int(truth[task["data"]["rad"]["name"]])]))
        pulled = run([*command, "review", "pull", "--announce", "--dvc", "--params", "params.yaml"])
        assert pulled.returncode == 0, pulled.stderr
        summary = json.loads(pulled.stdout)
        assert summary["status"] == "ingested" and summary["announced"]["event"] == FEEDBACK_EVENT

        async def triggered(client: Any) -> list[Any]:
            return list(await client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [served[0].id]})))

        runs = _eventually(lambda: _read(triggered), lambda rs: len(rs) == 1 and rs[0].state.is_final(), timeout=480)
        assert len(runs) == 1, f"no triggered run:\n{log_tail(tmp_path / 'serve.log')}"
        assert runs[0].parameters["batch"] == str((project / summary["batch"]).resolve())
        assert runs[0].parameters["ingested"] is True
        assert runs[0].state.is_completed(), f"{runs[0].state}:\n{log_tail(tmp_path / 'serve.log')}"
        # no champion yet: the batch's round trained the first judge cold on the pulled rows, and registered it
        result = json.loads((project / "models/retrained/round-1/rfnet_gate.json").read_text())
        assert result["promoted"] and "first valid candidate" in result["reason"]
    finally:
        stop(serving)
