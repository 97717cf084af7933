"""`python flows/deploy.py` as a new user first runs it: without a Prefect server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("api", "said"),
    [
        (None, "error: PREFECT_API_URL is not set: start a Prefect server (`prefect server start`"),
        ("http://127.0.0.1:9/api", "error: the Prefect server at PREFECT_API_URL=http://127.0.0.1:9/api does not"),
    ],
)
def test_without_a_server_deploy_says_in_one_line_how_to_start_one(api: str | None, said: str, tmp_path: Path) -> None:
    """Prefect would start a temporary server of its own and fail after 20 s in a 40-line traceback ("Timed out
    while attempting to connect to ephemeral Prefect API server")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), **({"PREFECT_API_URL": api} if api else {}))
    (tmp_path / "params.yaml").write_text("{}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "flows" / "deploy.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(said) and len(done.stderr.splitlines()) == 1, done.stderr
