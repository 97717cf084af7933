"""The glue the CLI, the DVC stages (through the CLI) and the Prefect flows share, so none holds logic the
others cannot reach: each function takes the typed params and paths and returns a JSON-able summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reliable_ad.params import Params


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def judge_from(spec: str | Path) -> Any:
    """A judge from an RFNet folder, or from the registry when given as name@alias (e.g. rfnet@champion)."""
    from reliable_ad.judge import Judge

    text = str(spec)
    return Judge.from_registry(text) if "@" in text and not Path(text).exists() else Judge.from_path(text)


def denoiser_from(generator: Path, controlnet: Path | None, params: Params, for_evaluation: bool = True) -> Any:
    """A slot denoiser of the generator (with another ControlNet if given), set up as recurrent generation runs."""
    from reliable_ad.generation.denoise import Denoiser

    cfg = params.generation.evaluate.recurrent if for_evaluation else params.generation.recurrent
    return Denoiser.from_folders(generator, controlnet, cfg)


def validate(params: Params, root: Path, manifest: Path | None, out_dir: Path, metrics: Path | None) -> Any:
    """Validate a dataset; the headline counts go to `metrics` (DVC metrics)."""
    from reliable_ad.data.validate import validate_dataset

    result = validate_dataset(root, params.data.validate_, out_dir, manifest)
    counts = ("success", "rows_in", "rows_accepted", "rows_quarantined", "seconds")
    write_json(metrics, {k: getattr(result, k) for k in counts})
    return result


def evaluate_generation(
    params: Params,
    generator: Path,
    controlnet: Path | None,
    judge: str | Path,
    metrics: Path,
    plots: Path,
    records: Path,
    experiment: str = "reliable-ad",
) -> dict[str, Any]:
    """Evaluate recurrent generation into `metrics`, `plots` and `records` (DVC), and log the same as the MLflow
    run "evaluate-generation" with the settings and the models' folder hashes; adds its `mlflow_run_id`."""
    from reliable_ad.generation.evaluate import evaluate_generation as run
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.tracking import flat_params, log_run, model_lineage

    p = params.generation
    result = run(
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        metrics,
        plots,
        records,
    )
    models = {"generator": generator, "controlnet": controlnet or generator / "controlnet", "judge": judge}
    run_id = log_run(
        "evaluate-generation",
        result,
        flat_params(p.evaluate.model_dump(mode="json")) | {"prompts": str(p.prompts)},
        model_lineage(models),
        {"plots": plots, "records": records, "metrics": metrics},
        experiment,
    )
    return {**result, "mlflow_run_id": run_id}


def ingest_feedback(params: Params, batch: Path, dataset: Path, reports: Path, dvc_add: bool = False) -> Any:
    """Validate a feedback batch and append what passes to `dataset` (maps made by the configured extractors)."""
    from reliable_ad.data.feedback import ingest

    data = params.data
    return ingest(
        batch,
        dataset,
        data.import_,
        data.validate_,
        reports,
        data.prepare.depth_maps,
        data.prepare.saliency_maps,
        dvc_add=dvc_add,
    )


def simulate_feedback(
    params: Params, generator: Path, dataset: Path, reports: Path, progress: bool = True
) -> dict[str, Any]:
    """RF1M-gen: the generator's images of new products, labelled by the reviewer, ingested into `dataset` as a
    feedback batch (validated, maps computed, own manifest) so `rad data prepare --feedback` can add them."""
    import tempfile

    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.simulated_feedback import simulate_feedback as run

    p = params.generation
    dataset.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dataset.parent, prefix=f".{dataset.name}.batch-") as batch:
        counts = run(
            denoiser_from(generator, None, params),
            load_prompt_pool(p.prompts),
            params.data.generated,
            params.data.synth,
            Path(batch),
            batch_size=p.evaluate.recurrent.batch_size,
            progress=progress,
        )
        result = ingest_feedback(params, Path(batch), dataset, reports)
    return {"labels": counts, **result.model_dump(exclude={"batch"})}


def _comparison_key(params: Params, generator: Path, controlnet: Path, judge: str | Path) -> str | None:
    """The key of a base-vs-tuned comparison; None when the judge is a registry alias (it can move)."""
    from reliable_ad.generation.rfft_eval import comparison_key

    if not Path(judge).is_dir():
        return None
    p = params.generation
    return comparison_key(generator, controlnet, Path(judge), p.evaluate, p.guard, p.gate.resamples, p.gate.confidence)


def compare_generators(
    params: Params, generator: Path, controlnet: Path, judge: str | Path, metrics: Path | None, grid: Path | None
) -> dict[str, Any]:
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.rfft_eval import compare_generators as run

    p = params.generation
    return run(
        denoiser_from(generator, None, params),
        denoiser_from(generator, controlnet, params),
        judge_from(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        p.guard,
        metrics,
        grid,
        resamples=p.gate.resamples,
        confidence=p.gate.confidence,
        key=_comparison_key(params, generator, controlnet, judge),
    )


def rfft_train(params: Params, generator: Path, judge: str | Path, out: Path, resume: bool = True) -> dict[str, Any]:
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.training.rfft import rfft_train as run

    p = params.generation
    return run(p.rfft, generator, judge_from(judge), load_prompt_pool(p.prompts), out, resume=resume)


def register_controlnet(
    params: Params,
    controlnet: Path,
    generator: Path,
    judge: str | Path,
    decision: Path | None,
    comparison: Path | None = None,
) -> dict[str, Any]:
    """Register and gate a tuned ControlNet; `comparison` is `rad rfft evaluate`'s metrics file, reused when
    it compared the same generator, ControlNet and judge under the same settings."""
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.controlnet import register_controlnet as run

    p = params.generation
    result = run(
        controlnet,
        generator,
        judge_from(judge),
        str(judge),
        load_prompt_pool(p.prompts),
        p.evaluate,
        p.guard,
        p.gate,
        decision_file=decision,
        earlier=json.loads(comparison.read_text()) if comparison is not None and comparison.exists() else None,
        key=_comparison_key(params, generator, controlnet, judge),
    )
    return dict(result.__dict__)
