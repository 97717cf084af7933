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


# ------------------------------------------------------------------------------------ stages on work pools


def _create_pools(*names: str) -> None:
    """Process work pools with Prefect's default job template, as `prefect work-pool create NAME --type process`."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()

    async def create(client: Any) -> None:
        for name in names:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))

    _read(create)


def _children(parent: Any) -> dict[str, Any]:
    """The flow runs started from flow run `parent` (run_deployment links them as its subflows), by flow name."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read(client: Any) -> dict[str, Any]:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
        return {(await client.read_flow(run.flow_id)).name: run for run in runs}

    return _read(read)


def test_deploying_to_a_work_pool_that_does_not_exist_registers_nothing(prefect_api: str, tmp_path: Path) -> None:
    from flows.deploy import register

    from reliable_ad.errors import UserError
    from reliable_ad.params import OrchestrationConfig

    _create_pools("half-cpu")
    settings = OrchestrationConfig(pools=True, cpu_pool="half-cpu", gpu_pool="half-gpu", workdir=tmp_path)
    with pytest.raises(UserError, match=r"work pool 'half-gpu' does not exist .* so nothing was deployed") as error:
        register(settings, generator=None)
    assert "prefect work-pool create half-gpu --type process" in str(error.value)

    async def on_pools(client: Any) -> list[Any]:
        return [d for d in await client.read_deployments() if d.work_pool_name in ("half-cpu", "half-gpu")]

    assert _read(on_pools) == []  # not even the flows of the CPU pool, which exists


def test_a_gpu_stage_no_worker_takes_fails_in_one_line_after_the_wait_and_its_run_is_cancelled(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.deploy import register
    from flows.pipeline import on_gpu_pool, rfft_stage
    from prefect import flow

    from reliable_ad.params import OrchestrationConfig, Params

    _create_pools("lonely-cpu", "lonely-gpu")  # and no worker polls either
    settings = OrchestrationConfig(pools=True, cpu_pool="lonely-cpu", gpu_pool="lonely-gpu", worker_wait_s=3)
    register(settings.model_copy(update={"workdir": tmp_path}), generator=None)
    params = Params(orchestration=settings)

    @flow
    def pipeline_part() -> dict[str, Any]:
        return on_gpu_pool(params, rfft_stage, params_path="params.yaml", generator="g", judge="j", out=tmp_path / "o")

    started = time.monotonic()
    state = pipeline_part(return_state=True)
    assert state.is_failed() and time.monotonic() - started < 60
    with pytest.raises(Exception) as error:
        state.result()
    message = str(error.value)
    assert message.startswith("no worker of work pool 'lonely-gpu' took the rfft stage within 3 s")
    assert "\n" not in message
    assert "prefect worker start --pool lonely-gpu" in message
    stage = _eventually(lambda: _children(state.state_details.flow_run_id), lambda runs: "rfft" in runs)["rfft"]
    assert stage.work_pool_name == "lonely-gpu" and stage.state.is_cancelled()  # a worker joining later skips it
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def pool_project(prefect_api: str, tmp_path_factory: pytest.TempPathFactory, generator: Path) -> Iterator[Path]:
    """A scratch project on tiny settings with `orchestration.pools` on, its deployments registered, and two process
    workers started in it: `cpu-node` on cpu-pool and `gpu-node` on gpu-pool (logs: workers/<name>.log)."""
    import shutil

    import yaml
    from flows.deploy import register
    from tests.flows.test_pipeline import TINY

    from reliable_ad.params import load_params

    project = tmp_path_factory.mktemp("pool-project")
    orchestration = {"pools": True, "worker_wait_s": 120}
    (project / "params.yaml").write_text(
        yaml.safe_dump({**TINY, "rounds": {**TINY["rounds"], "count": 0}, "orchestration": orchestration})
    )
    (project / "pool.json").write_text('[{"prompt": "a product on a desk, {} walls", "flag": 1, "image_scale": 0.5}]')
    shutil.copytree(generator, project / "generator")
    _create_pools("cpu-pool", "gpu-pool")
    settings = load_params(project / "params.yaml").orchestration.model_copy(update={"workdir": project})
    register(settings, generator=str(project / "generator"))

    root = Path(__file__).resolve().parents[2]
    (project / "workers").mkdir()
    workers = []
    for pool, name in (("cpu-pool", "cpu-node"), ("gpu-pool", "gpu-node")):
        env = clean_env(
            PREFECT_API_URL=prefect_api,
            PREFECT_HOME=str(project / "workers" / name),
            PREFECT_WORKER_QUERY_SECONDS="1",
            PYTHONPATH=os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
            RAD_ARTIFACT_ROOT=(project / "artifacts").as_uri(),
        )
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name]
        with (project / "workers" / f"{name}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(
                    command, env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    try:

        async def polling(client: Any) -> set[str]:
            return {w.name for pool in ("cpu-pool", "gpu-pool") for w in await client.read_workers_for_work_pool(pool)}

        online = _eventually(lambda: _read(polling), lambda names: names == {"cpu-node", "gpu-node"}, timeout=120)
        assert online == {"cpu-node", "gpu-node"}, log_tail(project / "workers" / "gpu-node.log")
        yield project
    finally:
        for worker in workers:
            stop(worker)


@pytest.mark.slow
def test_the_pipeline_on_the_cpu_pool_runs_rfft_on_the_gpu_pool_worker(pool_project: Path) -> None:
    """The full-pipeline deployment, run by the CPU pool's worker, sends RFFT and generation's evaluation to the GPU
    pool, whose worker runs them in the same project folder."""
    from prefect.deployments import run_deployment

    logs = pool_project / "workers"
    started = run_deployment("full-pipeline/full-pipeline", parameters={"params_path": "params.yaml"}, timeout=0)

    async def pipeline(client: Any) -> Any:
        return await client.read_flow_run(started.id)

    run = _eventually(lambda: _read(pipeline), lambda r: r.state.is_final(), timeout=1500)
    tails = f"{log_tail(logs / 'cpu-node.log')}\n{log_tail(logs / 'gpu-node.log')}"
    assert run.state.is_completed(), f"{run.state}:\n{tails}"
    stages = _children(run.id)
    assert run.work_pool_name == "cpu-pool" and {"rfft", "evaluate-generation"} <= set(stages)
    rfft, evaluation = stages["rfft"], stages["evaluate-generation"]
    gpu_log, cpu_log = (logs / "gpu-node.log").read_text(), (logs / "cpu-node.log").read_text()
    for stage in (rfft, evaluation):
        assert stage.work_pool_name == "gpu-pool" and stage.state.is_completed()
        assert f"Worker 'gpu-node' submitting flow run '{stage.id}'" in gpu_log and str(stage.id) not in cpu_log
    assert f"Worker 'cpu-node' submitting flow run '{run.id}'" in cpu_log
    assert (pool_project / "models" / "rfft" / "controlnet").is_dir()
    assert "promoted" in json.loads((pool_project / "metrics" / "rfft_gate.json").read_text())
    print(  # the evidence, for the record of the run (pytest -s)
        f"full-pipeline {run.id} on {run.work_pool_name}; rfft {rfft.id} on {rfft.work_pool_name} "
        f"({rfft.state.name}); evaluate-generation {evaluation.id} on {evaluation.work_pool_name}\n"
        + "\n".join(line for line in gpu_log.splitlines() if str(rfft.id) in line)
    )
