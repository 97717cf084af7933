"""Push/pull time of a review round through a real Label Studio (label-studio 1.23.2 from .venv-labelstudio,
SQLite, started here): server start, `rad review push` of N tasks with the judge's verdicts as predictions,
the simulated annotator answering all of them, `rad review pull` (export, batch, validation, ingest, maps),
and a second pull that finds nothing new.

    python benchmarks/review_roundtrip.py [--tasks 1000] [--server .venv-labelstudio/bin/label-studio]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine
from reliable_ad.api import review_annotate, review_pull, review_push
from reliable_ad.data import layout
from reliable_ad.data.config import SynthConfig, ValidationConfig
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.params import Params
from reliable_ad.review.client import LabelStudio
from reliable_ad.review.config import ReviewConfig
from reliable_ad.review.server import local_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--server", type=Path, default=Path(".venv-labelstudio/bin/label-studio"))
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="review-bench-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        write_synth(SynthConfig(n=args.tasks, seed=7), root / "queue", workers=2)
        _add_verdicts(root / "queue")
        print(f"queue of {args.tasks} RF1M-synth renderings written in {time.perf_counter() - started:.1f} s")
        with local_server(args.server, root) as server:
            print(f"server start (fresh SQLite, migrations): {server.started_s:.1f} s")
            review = ReviewConfig(url=server.url, project="benchmark", document_root=root)
            params = Params(review=review)
            params.data.validate_ = ValidationConfig(workers=2, data_docs=False)
            client = LabelStudio(server.url, server.token, timeout_s=600)
            timed = {
                "push": lambda: review_push(params, root / "queue", root / "reports", client=client),
                "annotate (simulated annotator)": lambda: review_annotate(params, client),
                "pull + ingest": lambda: review_pull(
                    params, root / "feedback", root / "incoming", root / "reports", None, track=False, client=client
                ),
                "pull again (nothing new)": lambda: review_pull(
                    params, root / "feedback", root / "incoming", root / "reports", None, track=False, client=client
                ),
            }
            for name, step in timed.items():
                started = time.perf_counter()
                result = step()
                seconds = time.perf_counter() - started
                shown = {k: result[k] for k in ("tasks_created", "status", "rows", "unchanged") if k in result}
                print(f"{name}: {seconds:.1f} s ({args.tasks / seconds:.0f} tasks/s) {json.dumps(shown)}")


def _add_verdicts(queue: Path) -> None:
    """A judge's verdicts in the queue's metadata, as `rad recurrent --queue` writes them."""
    rng = np.random.default_rng(0)
    path = queue / layout.METADATA_FILE
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    with path.open("w") as handle:
        for entry in entries:
            p = float(rng.uniform())
            verdict = {"p_available": p, "judge_label": "available" if p >= 0.5 else "size_mismatch"}
            handle.write(json.dumps(entry | verdict | {"judge_threshold": 0.5, "judge": "benchmark"}) + "\n")


if __name__ == "__main__":
    main()
