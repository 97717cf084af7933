"""Serve the flows locally: a nightly retrain, a retrain on every new feedback batch, the full pipeline.

    python flows/deploy.py            # needs a Prefect server: PREFECT_API_URL (see docker/compose.yaml)

The feedback trigger listens for the event that `rad feedback announce DIR` and `rad review pull --announce`
emit (open-source Prefect has no file watcher: the code that receives a batch announces it). On a work pool of
GPU nodes, deploy the same flows with `flow.from_source(...).deploy(work_pool_name="gpu-pool", ...)` instead of
serving them here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import serve
from prefect.events import DeploymentEventTrigger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.pipeline import full_pipeline, retrain_on_feedback
from reliable_ad.api import FEEDBACK_EVENT
from reliable_ad.paths import Paths

PATHS = Paths()


def deployments(generator: str | None = str(PATHS.generator)) -> list:
    nightly = retrain_on_feedback.to_deployment(
        name="retrain-nightly",
        cron="0 3 * * *",
        parameters={"batch": str(PATHS.incoming), "generator": generator},
        description="every night: ingest the latest batch (if new) and retrain behind the gates",
    )
    on_feedback = retrain_on_feedback.to_deployment(
        name="retrain-on-feedback",
        triggers=[
            DeploymentEventTrigger(
                expect={FEEDBACK_EVENT},
                parameters={
                    "batch": "{{ event.payload.batch }}",
                    "generator": generator,
                    "ingested": "{{ event.payload.ingested | default(false) }}",  # rad review pull ingests first
                },
            )
        ],
        description="whenever `rad feedback announce` reports a new batch",
    )
    pipeline = full_pipeline.to_deployment(name="full-pipeline", parameters={"generator": generator})
    return [nightly, on_feedback, pipeline]


if __name__ == "__main__":
    serve(*deployments())
