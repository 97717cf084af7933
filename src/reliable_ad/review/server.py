"""A throwaway Label Studio server: SQLite in a temporary folder, local files served, stopped on exit.

The embedded world's review path, the integration tests and the benchmark start one. Label Studio pins
packages that clash with this stack, so it runs from its own environment (`review.server`, made by `.ci/run`:
``.venv-labelstudio``). Its admin and token are made up for the run and handed over in the environment, never
on a command line or in a file; the server keeps the token in its own database, deleted with the folder.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reliable_ad.review.client import ReviewServerError

ADMIN = "admin@reliable-ad.local"


@dataclass(frozen=True)
class LocalServer:
    url: str
    token: str = field(repr=False)
    password: str = field(repr=False)
    document_root: Path
    log: Path
    started_s: float  # seconds from start to the first healthy answer

    username: str = ADMIN


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(command: Path, document_root: Path, timeout: float = 240.0) -> Iterator[LocalServer]:
    """Start `command` (a label-studio executable) serving files below `document_root`; stop it on exit."""
    if not command.is_file():
        raise ReviewServerError(
            f"no Label Studio server at {command} (review.server): create its environment with "
            f"`python3 -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install label-studio==1.23.2`"
        )
    token, password = secrets.token_hex(20), secrets.token_urlsafe(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="label-studio-") as home:
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": home,
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve()),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_USERNAME": ADMIN,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "DO_NOT_TRACK": "1",
        }
        log = Path(home) / "server.log"
        args = [str(command.absolute()), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # stop() signals the whole group
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, process, log, timeout)
            yield LocalServer(url, token, password, document_root, log, time.monotonic() - started)
        finally:
            _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ReviewServerError(f"Label Studio exited with code {process.returncode} on start:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ReviewServerError(f"Label Studio did not answer {url}/health within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
