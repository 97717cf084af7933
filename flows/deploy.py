"""Register the flows with a Prefect server: a nightly retrain, a retrain on every new feedback batch, the full
pipeline, and (on work pools) the stages that need a GPU.

    python flows/deploy.py [--params params.yaml]   # needs a Prefect server: PREFECT_API_URL (docker/compose.yaml)

With `orchestration.pools` off (the default) this process serves the flows and runs their flow runs itself.
With it on, the flows are deployed to the work pool `orchestration.cpu_pool` and RFFT and generation's
evaluation to `orchestration.gpu_pool`; the pools' workers run them in the project folder
(`orchestration.workdir`), and this command ends once everything is registered. The pools must exist (a
worker's `prefect worker start --pool NAME --type process` creates its own): a missing one registers nothing.

The feedback trigger listens for the event that `rad feedback announce DIR` and `rad review pull --announce`
emit (open-source Prefect has no file watcher: the code that receives a batch announces it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.pipeline import GPU_DEPLOYMENT, evaluate_generation_stage, full_pipeline, retrain_on_feedback, rfft_stage
from reliable_ad import api
from reliable_ad.errors import UserError
from reliable_ad.params import OrchestrationConfig, load_params
from reliable_ad.paths import Paths

PATHS = Paths()


def deployments(
    generator: str | None = str(PATHS.generator), pools: OrchestrationConfig | None = None
) -> list[RunnerDeployment]:
    """The deployments to serve, or with `pools` those of the work pools (the GPU stages among them)."""
    on_cpu: dict[str, Any] = {}
    if pools is not None:  # a worker imports the flows by module from the project folder it runs in
        workdir = str(pools.workdir or Path.cwd())
        on_cpu = {
            "work_pool_name": pools.cpu_pool,
            "job_variables": {"working_dir": workdir},
            "entrypoint_type": EntrypointType.MODULE_PATH,
        }
    nightly = retrain_on_feedback.to_deployment(
        name="retrain-nightly",
        cron="0 3 * * *",
        parameters={"batch": str(PATHS.incoming), "generator": generator},
        description="every night: ingest the latest batch (if new) and retrain behind the gates",
        **on_cpu,
    )
    on_feedback = retrain_on_feedback.to_deployment(
        name="retrain-on-feedback",
        triggers=[
            DeploymentEventTrigger(
                expect={api.FEEDBACK_EVENT},
                parameters={
                    "batch": "{{ event.payload.batch }}",
                    "generator": generator,
                    "ingested": "{{ event.payload.ingested | default(false) }}",  # rad review pull ingests first
                },
            )
        ],
        description="whenever `rad feedback announce` reports a new batch",
        **on_cpu,
    )
    pipeline = full_pipeline.to_deployment(name="full-pipeline", parameters={"generator": generator}, **on_cpu)
    if pools is None:
        return [nightly, on_feedback, pipeline]
    on_gpu = {**on_cpu, "work_pool_name": pools.gpu_pool}
    stages = [stage.to_deployment(name=GPU_DEPLOYMENT, **on_gpu) for stage in (rfft_stage, evaluate_generation_stage)]
    return [nightly, on_feedback, pipeline, *stages]


def register(pools: OrchestrationConfig, generator: str | None = str(PATHS.generator)) -> list[str]:
    """Deploy to the work pools; every one of them must exist first, so that a missing pool registers nothing.
    Returns the deployments' names."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in (pools.cpu_pool, pools.gpu_pool):
            try:
                client.read_work_pool(pool)
            except ObjectNotFound as error:
                raise UserError(
                    f"work pool {pool!r} does not exist on the Prefect server, so nothing was deployed: create it "
                    f"with `prefect work-pool create {pool} --type process` (or start its first worker, "
                    f"`prefect worker start --pool {pool} --type process`)"
                ) from error
    made = deployments(generator, pools)
    for deployment in made:
        deployment.apply()
    return [f"{d.flow_name}/{d.name}" for d in made]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="orchestration settings from here")
    args = parser.parse_args()
    try:
        settings = load_params(args.params).orchestration
        api.prefect_server()
        if settings.pools:
            for name in register(settings):
                print(f"deployed {name}")
            return
    except UserError as error:
        sys.exit(f"error: {error}")
    serve(*deployments())


if __name__ == "__main__":
    main()
