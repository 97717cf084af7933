"""A Label Studio server for the session (it takes 30-40 s to start: one for every module that needs it)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from reliable_ad.review.server import LocalServer, local_server

LABEL_STUDIO = Path(__file__).resolve().parents[2] / ".venv-labelstudio" / "bin" / "label-studio"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """label-studio 1.23.2 from its own environment (SQLite in a temporary folder), serving local files below
    its document root; tests put their queues there."""
    if not LABEL_STUDIO.is_file():
        pytest.skip(
            f"no Label Studio server environment at {LABEL_STUDIO.parent.parent} (.ci/run creates it: "
            "python3 -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install label-studio==1.23.2)"
        )
    with local_server(LABEL_STUDIO, tmp_path_factory.mktemp("label-studio-files")) as server:
        yield server
