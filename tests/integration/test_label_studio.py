"""Review through a real Label Studio (label-studio 1.23.2, SQLite, local files served), started for the session.

The queue goes out with `rad review push`, annotations come in through the API as reviewers' would, `rad review
pull` turns them into a batch that is validated, ingested and `dvc add`ed, and headless Chromium shows a task.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from reliable_ad.cli import app
from reliable_ad.data import layout
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.labels import RF1M_LABELS
from reliable_ad.params import load_params
from reliable_ad.review.client import LabelStudio
from reliable_ad.review.config import TOKEN_ENV
from reliable_ad.review.queue import verdict_result
from reliable_ad.review.server import LocalServer

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Work:
    """A project folder below the server's document root, with its own Label Studio project."""

    root: Path
    server: LocalServer
    title: str

    @property
    def client(self) -> LabelStudio:
        return LabelStudio(self.server.url, os.environ[TOKEN_ENV], retries=2, retry_delay_s=0.2)

    def rad(self, *args: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, [*args, "--params", str(self.root / "params.yaml")])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))  # stderr: MLflow's and GX's notes

    def queue(self, n: int, seed: int) -> tuple[Path, dict[str, str]]:
        """RF1M-synth renderings as a review queue, with a judge's verdicts; returns it and the rule labels."""
        folder = self.root / f"queue-{seed}"
        write_synth(SynthConfig(n=n, seed=seed), folder)
        entries = [json.loads(line) for line in (folder / layout.METADATA_FILE).read_text().splitlines()]
        with (folder / layout.METADATA_FILE).open("w") as handle:
            for i, entry in enumerate(entries):
                p = [0.92, 0.08, 0.55, 0.35, 0.7, 0.2][i % 6]
                verdict = {"judge_label": "available" if p >= 0.5 else "size_mismatch", "judge": "rfnet-test"}
                handle.write(json.dumps(entry | verdict | {"p_available": p, "judge_threshold": 0.5}) + "\n")
        truth = {}
        for line in (folder / layout.LABEL_FILE).read_text().splitlines():
            name, label = line.split("\t")
            truth[name] = RF1M_LABELS[int(label)]
        return folder, truth

    def tasks(self, all_tasks: bool = True) -> list[dict[str, Any]]:
        project = self.client.project(self.title)
        assert project is not None
        return self.client.export(project["id"], all_tasks=all_tasks)

    def answer(self, truth: dict[str, str], completed_by: int | None = None) -> list[dict[str, Any]]:
        """Annotate every task with its rule label, as a reviewer would in the interface."""
        return [
            self.client.annotate(t["id"], verdict_result(truth[t["data"]["rad"]["name"]]), completed_by)
            for t in self.tasks()
        ]


@pytest.fixture
def work(label_studio: LocalServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Work:
    root = label_studio.document_root / request.node.name[:60]
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv(TOKEN_ENV, label_studio.token)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # dvc
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("RAD_ARTIFACT_ROOT", (root / "artifacts").as_uri())
    title = f"test {request.node.name[5:40]}"
    review = {
        "url": label_studio.url,
        "project": title,
        "document_root": str(label_studio.document_root),
        "retries": 2,
        "retry_delay_s": 0.2,
    }
    data = {"validate": {"workers": 1, "data_docs": False, "class_share": [0.0, 1.0]}}
    (root / "params.yaml").write_text(yaml.safe_dump({"review": review, "data": data}))
    return Work(root, label_studio, title)


def _dvc_md5(root: Path) -> str:
    return str(yaml.safe_load((root / "data" / "feedback.dvc").read_text())["outs"][0]["md5"])


def _labels(dataset: Path) -> dict[int, str]:
    """review task -> label of the rows the feedback dataset holds now."""
    meta = {
        m["image"][:-4]: m["review_task"]
        for m in map(json.loads, (dataset / layout.METADATA_FILE).read_text().splitlines())
    }
    return {meta[r["id"]]: r["label"] for r in pq.read_table(dataset / layout.MANIFEST_FILE).to_pylist()}


def test_a_queue_goes_out_and_comes_back_as_a_dvc_version(work: Work) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work.root, check=True)
    queue, truth = work.queue(12, seed=61)

    pushed = work.rad("review", "push", str(queue), "--limit", "10")
    assert (pushed["items_in"], pushed["tasks_created"], pushed["not_pushed"], pushed["rejected"]) == (12, 10, 2, 0)
    tasks = work.tasks()
    # most uncertain first: the labelling stream follows task ids, so ids follow |p - tau|
    margins = [abs(t["data"]["p_available"] - 0.5) for t in sorted(tasks, key=lambda t: t["id"])]
    assert margins == sorted(margins) and sum(m > 0.4 for m in margins) == 2  # two of the four surest wait
    with httpx.Client(base_url=work.server.url, headers={"Authorization": f"Token {work.server.token}"}) as http:
        predictions = http.get("/api/predictions/", params={"task": tasks[0]["id"]}).json()
        served = http.get(tasks[0]["data"]["image"])
    assert [(p["model_version"], p["score"]) for p in predictions] == [("rfnet-test", tasks[0]["data"]["p_available"])]
    assert (
        served.status_code == 200
        and served.content == (queue / "images" / tasks[0]["data"]["rad"]["name"]).read_bytes()
    )
    again = work.rad("review", "push", str(queue))
    assert (again["tasks_created"], again["already_pushed"]) == (2, 10)

    annotations = work.answer(truth)
    pulled = work.rad("review", "pull", "--dvc")
    assert pulled["status"] == "ingested" and pulled["rows"] == pulled["tasks_annotated"] == 12
    assert pulled["ingest"]["rows_accepted"] == 12 and pulled["ingest"]["rows_quarantined"] == 0
    by_task = _labels(work.root / "data" / "feedback")
    assert sorted(by_task.values()) == sorted(truth.values())
    first_version = (work.root / "data" / "feedback.dvc").read_text()
    judge = json.loads((work.root / "metrics" / "review.json").read_text())["judge"]
    assert judge["judged"] == 12 and 0 <= judge["judge_accept_precision"] <= 1
    assert sum(sum(row.values()) for row in judge["confusion"].values()) == 12

    import mlflow

    run = mlflow.get_run(pulled["mlflow_run_id"])
    assert run.info.run_name == "review-pull" and run.data.metrics["rows"] == 12
    assert run.data.metrics["judge_accept_precision"] == judge["judge_accept_precision"]

    nothing = work.rad("review", "pull", "--dvc")
    assert nothing["status"] == "nothing new" and nothing["unchanged"] == 12
    assert (work.root / "data" / "feedback.dvc").read_text() == first_version

    # an annotation edited after the pull: updated in place of the old row, as a new DVC version
    edited = annotations[3]
    new_label = "shape_hallucination" if by_task[edited["task"]] != "shape_hallucination" else "available"
    work.client.update_annotation(edited["id"], verdict_result(new_label))
    changed = work.rad("review", "pull", "--dvc")
    assert (changed["rows"], changed["changed"], changed["unchanged"]) == (1, 1, 11)
    assert changed["ingest"]["rows_superseded"] == 1 and changed["ingest"]["dataset_rows"] == 12
    relabelled = _labels(work.root / "data" / "feedback")
    assert relabelled[edited["task"]] == new_label and len(relabelled) == 12
    assert _dvc_md5(work.root) != yaml.safe_load(first_version)["outs"][0]["md5"]

    # the earlier version is still there to go back to
    (work.root / "data" / "feedback.dvc").write_text(first_version)
    dvc = [sys.executable, "-m", "dvc", "checkout", "-q", "--force", "data/feedback"]
    subprocess.run(dvc, cwd=work.root, check=True)
    assert _labels(work.root / "data" / "feedback")[edited["task"]] == by_task[edited["task"]]


def test_several_annotators_resolve_by_policy_with_their_agreement_reported(work: Work) -> None:
    queue, truth = work.queue(6, seed=62)
    work.rad("review", "push", str(queue), "--order", "all")
    with httpx.Client(base_url=work.server.url, headers={"Authorization": f"Token {work.server.token}"}) as http:
        second, third = (
            http.post("/api/users/", json={"email": f"{name}@example.com", "username": name}).json()["id"]
            for name in ("second", "third")
        )
    work.answer(truth)  # the admin
    tasks = sorted(work.tasks(), key=lambda t: t["id"])
    other = {t["data"]["rad"]["name"]: truth[t["data"]["rad"]["name"]] for t in tasks}
    disputed = tasks[0]["data"]["rad"]["name"]
    other[disputed] = "unsuitable" if truth[disputed] != "unsuitable" else "available"
    work.answer(other, completed_by=second)

    params = yaml.safe_load((work.root / "params.yaml").read_text())
    params["review"] |= {"resolution": "hold", "min_annotators": 2}
    (work.root / "params.yaml").write_text(yaml.safe_dump(params))
    held = work.rad("review", "pull")
    assert (held["rows"], held["held"], held["tasks_annotated"]) == (5, 1, 6)
    assert held["annotators"]["tasks_multi"] == 6 and held["annotators"]["unanimous_share"] == 5 / 6
    assert held["annotators"]["fleiss_kappa"] < 1.0
    rejects = [json.loads(line) for line in Path(held["rejects"]).read_text().splitlines()]
    assert rejects == [{"task": tasks[0]["id"], "held": True, "reason": rejects[0]["reason"]}]
    assert "annotators disagree" in rejects[0]["reason"]

    # a third annotator breaks the tie; under `majority` the task comes in
    params["review"] |= {"resolution": "majority"}
    (work.root / "params.yaml").write_text(yaml.safe_dump(params))
    work.client.annotate(tasks[0]["id"], verdict_result(truth[disputed]), completed_by=third)
    settled = work.rad("review", "pull")
    assert (settled["rows"], settled["unchanged"], settled["held"]) == (1, 5, 0)
    assert _labels(work.root / "data" / "feedback")[tasks[0]["id"]] == truth[disputed]


def test_a_label_outside_the_set_and_a_deleted_image_are_quarantined_with_reasons(work: Work) -> None:
    queue, truth = work.queue(6, seed=63)
    work.rad("review", "push", str(queue), "--order", "all")
    tasks = sorted(work.tasks(), key=lambda t: t["id"])
    work.answer(truth)
    # the same annotator answers again, outside the set: the later answer is the one that counts
    outside = work.client.annotate(tasks[1]["id"], verdict_result("blurry"))
    (queue / "images" / tasks[2]["data"]["rad"]["name"]).unlink()
    pulled = work.rad("review", "pull")
    assert pulled["tasks_annotated"] == pulled["rows"] + pulled["unchanged"] + pulled["held"] + pulled["quarantined"]
    assert (pulled["rows"], pulled["quarantined"], pulled["votes_rejected"]) == (4, 2, 1)
    rejects = {r["task"]: r for r in map(json.loads, Path(pulled["rejects"]).read_text().splitlines())}
    assert rejects[tasks[1]["id"]]["annotation"] == outside["id"]
    assert "'blurry' is not in the label set" in rejects[tasks[1]["id"]]["reason"]
    assert "missing (deleted after the push?)" in rejects[tasks[2]["id"]]["reason"]
    assert set(_labels(work.root / "data" / "feedback")) == {t["id"] for t in tasks} - {tasks[1]["id"], tasks[2]["id"]}


def test_a_personal_access_token_works_and_no_token_reaches_a_file_or_a_log(
    work: Work, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(base_url=work.server.url, headers={"Authorization": f"Token {work.server.token}"}) as http:
        answer = http.post("/api/token/")
        personal = answer.json()["token"] if answer.status_code == 201 else None
    if personal is None:  # one per user: an earlier test run on this server made it
        pytest.skip(f"the server made no personal access token ({answer.status_code})")
    monkeypatch.setenv(TOKEN_ENV, personal)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work.root, check=True)
    queue, truth = work.queue(4, seed=64)
    outputs = [json.dumps(work.rad("review", "push", str(queue)))]
    work.answer(truth)
    outputs.append(json.dumps(work.rad("review", "pull", "--dvc")))
    captured = capfd.readouterr()
    seen = "\n".join([*outputs, captured.out, captured.err, caplog.text])
    secrets = {"personal": personal, "legacy": work.server.token}
    for name, secret in secrets.items():
        assert secret not in seen, f"the {name} token was printed or logged"
        for path in [p for p in work.root.rglob("*") if p.is_file()] + [work.server.log]:
            assert secret.encode() not in path.read_bytes(), f"the {name} token is written in {path}"


def test_chromium_shows_both_images_of_a_task(work: Work, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run installs it)")
    queue, _ = work.queue(2, seed=65)
    work.rad("review", "push", str(queue))
    first = min(work.tasks(), key=lambda t: t["id"])
    with _Browser(tmp_path) as browser:
        browser.go(f"{work.server.url}/user/login/", "!!document.querySelector('input[name=email]')")
        browser.evaluate(
            f"document.querySelector('input[name=email]').value = {json.dumps(work.server.username)};"
            f"document.querySelector('input[name=password]').value = {json.dumps(work.server.password)};"
            "document.querySelector('form').submit(); true"
        )
        browser.wait("location.pathname !== '/user/login/' && document.readyState === 'complete'")
        project = work.client.project(work.title)["id"]  # type: ignore[index]
        # the labelling view draws each Image tag as an <img> (in a div.lsf-image) of a blob it fetched (the Data
        # Manager's table beside it shows thumbnails of the same URLs: those do not count); its pixels are compared
        # with the files, product first, as the interface places them
        rendered = browser.go(
            f"{work.server.url}/projects/{project}/data?task={first['id']}",
            _PIXELS,
            until=lambda images: len(images) == 2,
        )
        assert len(rendered) == 2, f"the labelling view shows {len(rendered)} of the task's 2 images"
        name = first["data"]["rad"]["name"]
        for kind, seen in zip(("products", "images"), rendered, strict=True):
            with Image.open(queue / kind / name) as file:
                expected = np.asarray(file.convert("RGBA"), np.float64)
            assert seen[:2] == [expected.shape[1], expected.shape[0]], kind
            assert np.allclose(seen[2:], expected.reshape(-1, 4).mean(axis=0), atol=2.0), (kind, seen)
        text = browser.evaluate("document.body.innerText")
        assert first["data"]["title"] in text and "size_mismatch" in text and "Generated" in text
        shot = browser.screenshot(tmp_path / "task.png")
    assert shot.stat().st_size > 10_000


_PIXELS = """[...document.querySelectorAll('.lsf-image > img')]
  .filter(i => i.complete && i.naturalWidth > 0)
  .map(i => {
    const canvas = document.createElement('canvas');
    canvas.width = i.naturalWidth; canvas.height = i.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(i, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const sums = [0, 0, 0, 0];
    for (let k = 0; k < data.length; k++) sums[k % 4] += data[k];
    return [i.naturalWidth, i.naturalHeight, ...sums.map(v => v / (data.length / 4))];
  })"""


class _Browser:
    """Headless Chromium driven over the DevTools protocol (a websocket; no extra package)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._ids = itertools.count(1)

    def __enter__(self) -> _Browser:
        from websockets.sync.client import connect

        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,860"]
        self.process = subprocess.Popen(
            [str(CHROMIUM), *flags, "--remote-debugging-port=0", f"--user-data-dir={self.home / 'profile'}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                break
        else:
            pytest.fail("chromium did not open its DevTools port")
        pages = httpx.get(f"http://127.0.0.1:{found.group(1)}/json/list").json()
        self.socket = connect(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"], max_size=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                assert "error" not in message, message
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait(self, expression: str, until: Any = bool, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if until(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def go(self, url: str, expression: str, until: Any = bool) -> Any:
        self.call("Page.navigate", url=url)
        return self.wait(expression, until)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


def test_the_simulated_annotator_gives_the_reviewers_labels_through_label_studio(work: Work) -> None:
    """The embedded world's params switch: the same batch through Label Studio as straight in."""
    from reliable_ad.api import ingest_feedback, review_simulated
    from reliable_ad.data.imageio import decode, to_rgb, to_rgba
    from reliable_ad.data.reviewer import product_mask, review

    batch, _ = work.queue(8, seed=66)
    params = load_params(work.root / "params.yaml")
    result = review_simulated(params, batch, work.root / "via-ls", work.root / "reports", server=work.server)
    assert result["status"] == "ingested" and result["review"] == {"tasks_annotated": 8, "rows": 8, "held": 0}

    expected = []
    for line in (batch / layout.METADATA_FILE).read_text().splitlines():
        entry = json.loads(line)
        image = to_rgb(decode((batch / "images" / entry["image"]).read_bytes(), "image"))
        product = to_rgba(decode((batch / "products" / entry["image"]).read_bytes(), "product"))
        expected.append(review(image, product_mask(product), entry["height_cm"]).label)
    through = pq.read_table(work.root / "via-ls" / layout.MANIFEST_FILE).column("label").to_pylist()
    assert sorted(through) == sorted(expected)
    direct = ingest_feedback(params, batch, work.root / "direct", work.root / "reports")
    assert direct.rows_accepted == result["rows_accepted"] == 8
