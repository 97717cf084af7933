"""Helpers for tests against real servers that the tests start themselves (and always stop again).

Imported by the test modules beside it (pytest puts this folder on sys.path: the tests are no package)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with code {process.returncode} before {url} answered:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log_tail(log)}")


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Servers:
    """Server subprocesses started in a new session each; `close()` stops them all, newest first."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(
        self, args: list[str], env: dict[str, str], health_url: str, log: Path, cwd: Path, timeout: float = 120.0
    ) -> subprocess.Popen:
        """Start `args` and wait until `health_url` answers 200 (the log goes to `log`)."""
        with log.open("wb") as out:
            # a session of its own: stop() signals the server's whole process group (uvicorn workers included)
            process = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started.append(process)
        wait_for_http(health_url, process, log, timeout)
        return process

    def close(self) -> None:
        while self.started:
            stop(self.started.pop())


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any tracking/orchestration address, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING", "RAD_"))}
    env.update(
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra)
    return env
