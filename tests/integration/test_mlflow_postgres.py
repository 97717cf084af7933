"""The registry against a real MLflow server: PostgreSQL backend store, artifacts proxied by the server.

This is the GPU-node setup of the README (`MLFLOW_TRACKING_URI=http://...`, `RAD_ARTIFACT_ROOT=mlflow-artifacts:`)
with both servers started here: a throwaway PostgreSQL cluster (Debian's binaries, `initdb` + `pg_ctl`, run as
the `postgres` user when we are root) and `mlflow server` on free ports, both stopped at teardown.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tests.integration.live_servers import Servers, clean_env, free_port, log_tail

from reliable_ad import api
from reliable_ad.models.rfnet import RFNet
from reliable_ad.params import Params
from reliable_ad.registry.models import CHALLENGER, CHAMPION, by_alias, list_versions

pytestmark = pytest.mark.integration

PG_ROOT = Path("/usr/lib/postgresql")
PARAMS = Params(rfnet={"gate": {"resamples": 200}})


def _pg_bin() -> Path:
    """The newest PostgreSQL version's bin folder that has initdb and pg_ctl (skips the module without one)."""
    found = sorted(
        (p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").exists() and (p / "bin" / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.skip(f"no PostgreSQL server binaries under {PG_ROOT} (Debian package `postgresql`; .ci/run installs it)")
    return found[-1]


@dataclass
class Postgres:
    """A throwaway cluster in `base` (data, socket, log), reachable over TCP on 127.0.0.1:`port` without password."""

    bin: Path
    base: Path
    port: int
    user: str | None  # run the server as this user (PostgreSQL refuses root); None: as ourselves

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        # cwd: a folder the server's user can enter (initdb fails in an unreadable working directory)
        result = subprocess.run(
            [*prefix, *args],
            cwd=self.base,
            env=clean_env(LC_ALL="C", LANG="C"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"server log:\n{log_tail(self.log)}"
            )
        return result

    def start(self) -> None:
        initdb = ["-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        self.run(str(self.bin / "initdb"), *initdb)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
        start = ["start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options]
        self.run(str(self.bin / "pg_ctl"), *start)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            prefix = ["runuser", "-u", self.user, "--"] if self.user else []
            subprocess.run(
                [*prefix, str(self.bin / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.data)],
                cwd=self.base,
                capture_output=True,
                timeout=60,
                check=False,
            )

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _pg_bin()
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(
                "running as root and there is no `postgres` user to run PostgreSQL as (the Debian package adds it)"
            )
        if shutil.which("runuser") is None:
            pytest.skip("running as root and `runuser` is missing: cannot run PostgreSQL as another user")
        user = "postgres"
    # not under pytest's tmp folder: that one is private to us, and the server may run as another user
    base = Path(tempfile.mkdtemp(prefix="rad-postgres-"))
    if user:
        shutil.chown(base, user)
    server = Postgres(bin_dir, base, free_port(), user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    database: str
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-server")
    backend = postgres.create_database("mlflow")
    port = free_port()
    servers = Servers()
    try:
        server = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--serve-artifacts"]
        server += ["--artifacts-destination", str(root / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port)]
        servers.start(
            [*server, "--workers", "1"],
            # no job runner: its huey consumers serve GenAI jobs, not the registry, and cost seconds on 2 cores
            env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            health_url=f"http://127.0.0.1:{port}/health",
            log=root / "mlflow-server.log",
            cwd=root,
            timeout=150,
        )
        yield MlflowServer(f"http://127.0.0.1:{port}", "mlflow", root / "mlartifacts")
    finally:
        servers.close()


@pytest.fixture
def client_of(mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """Point this process at the server exactly as a GPU node is pointed (README, "Running on GPU nodes")."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("RAD_ARTIFACT_ROOT", "mlflow-artifacts:")
    monkeypatch.setenv("RAD_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    return mlflow_server


def test_register_gate_and_load_the_champion_through_the_server(
    client_of: MlflowServer, postgres: Postgres, tiny_shards: Path, tmp_path: Path, make_rfnet
) -> None:
    import mlflow

    candidate = tmp_path / "a"
    make_rfnet(vocabulary=["red", "cm"]).save(candidate)

    first = api.register_rfnet(PARAMS, candidate, tiny_shards, tmp_path / "m" / "rfnet_gate.json")
    assert first["promoted"] and "first valid candidate" in first["reason"]
    # the same weights again: the champion is downloaded from the server and evaluated beside it; no improvement
    second = api.register_rfnet(PARAMS, candidate, tiny_shards, None)
    assert not second["promoted"]
    assert second["delta"] == pytest.approx(0.0) and second["ci_low"] <= 0.0 <= second["ci_high"]
    assert by_alias("rfnet", CHAMPION).version == first["version"]
    assert by_alias("rfnet", CHALLENGER).version == second["version"]
    assert [v.version for v in list_versions("rfnet")] == [first["version"], second["version"]]
    assert by_alias("rfnet", CHAMPION).tags["gate.promoted"] == "true"

    # the champion comes back through the server, as the very weights that were registered
    judge = api.common.judge_from(PARAMS, "rfnet@champion")
    original = RFNet.load(candidate).state_dict()
    loaded = judge.model.state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k].cpu(), original[k]) for k in original)
    assert judge.config.labels == RFNet.load(candidate).config.labels

    # where things went: the experiment's artifacts are proxied by the server, which keeps them on its disk ...
    experiment = mlflow.MlflowClient().get_experiment_by_name(PARAMS.paths.experiment)
    assert experiment.artifact_location == f"mlflow-artifacts:/{PARAMS.paths.experiment}"
    stored = {p.name for p in client_of.artifacts.rglob("*") if p.is_file()}
    assert "gate_decision.json" in stored and "MLmodel" in stored
    weight_files = {p.name for p in candidate.rglob("*") if p.is_file()}
    assert weight_files <= stored, f"model files {weight_files - stored} not stored by the server"
    # ... and runs, versions and aliases live in PostgreSQL
    rows = postgres.query(
        client_of.database, "SELECT version FROM model_versions WHERE name = 'rfnet' ORDER BY version"
    )
    assert [str(v) for (v,) in rows] == [first["version"], second["version"]]
    aliases = postgres.query(client_of.database, "SELECT alias, version FROM registered_model_aliases ORDER BY alias")
    assert {a: str(v) for a, v in aliases} == {CHALLENGER: second["version"], CHAMPION: first["version"]}
    runs = postgres.query(client_of.database, "SELECT count(*) FROM runs WHERE name = 'rfnet-gate'")
    assert runs == [(2,)]
