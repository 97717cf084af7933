"""The client's failures, against real sockets: nothing listening, a gateway answering 503, a refused token."""

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from reliable_ad.cli import app
from reliable_ad.review.client import LabelStudio, ReviewServerError, _jwt_claims
from reliable_ad.review.config import TOKEN_ENV, ReviewConfig
from reliable_ad.review.server import free_port

TOKEN = "tok-3f9a1c77e2"


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status the test set, and counts them."""

    status = 503
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "nope"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_listening_is_retried_then_named_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = LabelStudio(url, TOKEN, retries=3, retry_delay_s=0.01)
    with pytest.raises(ReviewServerError, match=r"did not answer GET /api/projects/ after 3 tries \(ConnectError"):
        client.project("x")


def test_a_gateway_that_answers_503_is_retried(answering: tuple[str, type[_Answer]]) -> None:
    url, handler = answering
    with pytest.raises(ReviewServerError, match="after 3 tries \\(HTTP 503\\)"):
        LabelStudio(url, TOKEN, retries=3, retry_delay_s=0.01).whoami()
    assert handler.seen == [f"Token {TOKEN}"] * 3


def test_a_refused_token_names_the_variable_not_the_token(answering: tuple[str, type[_Answer]]) -> None:
    url, handler = answering
    handler.status = 401
    with pytest.raises(ReviewServerError) as caught:
        LabelStudio(url, TOKEN, retries=3, retry_delay_s=0.01).whoami()
    assert f"refused the token from {TOKEN_ENV}" in str(caught.value) and TOKEN not in str(caught.value)
    assert len(handler.seen) == 1  # a refusal is not retried
    assert TOKEN not in repr(LabelStudio(url, TOKEN))


def test_the_token_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ReviewServerError, match=f"{TOKEN_ENV} is not set"):
        LabelStudio.from_config(ReviewConfig())
    result = CliRunner().invoke(app, ["review", "pull", "--dataset", str(tmp_path / "feedback")])
    assert result.exit_code == 1 and f"{TOKEN_ENV} is not set" in result.output
    assert not (tmp_path / "feedback").exists()
    for command in ("push", "pull", "annotate"):  # no option that would put it in a shell history
        assert "--token" not in CliRunner().invoke(app, ["review", command, "--help"]).output
    monkeypatch.setenv(TOKEN_ENV, f" {TOKEN}\n")
    assert LabelStudio.from_config(ReviewConfig()).token == TOKEN


def test_personal_access_tokens_are_told_apart_from_legacy_ones() -> None:
    refresh = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6OTk5OTk5OTk5OX0.c2ln"
    assert _jwt_claims(refresh) == {"token_type": "refresh", "exp": 9999999999}
    assert _jwt_claims(TOKEN) == {} and _jwt_claims("a.b.c") == {}


def test_an_unreachable_server_fails_the_pull_and_leaves_everything_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from reliable_ad.data.feedback import init_feedback

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    init_feedback(tmp_path / "feedback")
    before = {p.name: p.read_bytes() for p in (tmp_path / "feedback").iterdir()}
    (tmp_path / "params.yaml").write_text("review: {retries: 2, retry_delay_s: 0.01}\n")
    url = f"http://127.0.0.1:{free_port()}"
    args = ["review", "pull", "--url", url, "--dataset", str(tmp_path / "feedback"), "--batches", str(tmp_path / "in")]
    result = CliRunner().invoke(app, [*args, "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1
    assert f"error: Label Studio at {url} did not answer GET /api/projects/ after 2 tries" in result.output
    assert "Traceback" not in result.output and TOKEN not in result.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "feedback").iterdir()} == before
    assert not (tmp_path / "in").exists()
