"""Generation: the official sampler, recurrent generation and its evaluation (whole or in shards), and the tiny
generator of the embedded world."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reliable_ad.api.common import denoiser_from, generates_the_same, judge_from, judge_version, product_source
from reliable_ad.errors import InputError
from reliable_ad.generation.config import RecurrentConfig
from reliable_ad.params import Params


def generate(
    params: Params, clip_skip: int | None = None, save_concat: bool = False, pipeline: str = "T2I"
) -> dict[str, Any]:
    """Ad images as the official sample.py makes them (`generation.generate` holds its arguments), each output
    logged with its product, prompt and seed."""
    from reliable_ad.generation.official import run_generate

    if pipeline != "T2I":
        raise InputError(f"unknown pipeline {pipeline!r}: the official sampler has only T2I")
    args = params.generation.generate
    records = run_generate(args, clip_skip=clip_skip, save_concat=save_concat)
    return {"images": len(records), "save_path": str(args.save_path), "log": str(args.save_path / "log.jsonl")}


def recurrent(
    params: Params,
    generator: Path,
    controlnet: Path | None,
    judge: str | Path,
    products: int,
    out: Path,
    queue: Path | None = None,
    product_seed: int | None = None,
    probe: Path | None = None,
) -> dict[str, Any]:
    """Recurrent generation (`generation.recurrent`) for `products` RF1M-synth products (of `product_seed`, by
    default the evaluation's): every attempt to `out/attempts.parquet`, the accepted images to `out/accepted`,
    and with `queue` every judged attempt as a review queue (`rad review push`). A queue of the evaluation's
    own products is refused: they would become training labels. With `probe` (a folder of
    `evaluate_generation`'s probes) attempts stop early as calibrated with it."""
    import pandas as pd
    from PIL import Image

    from reliable_ad.generation.prompts import pool_for
    from reliable_ad.generation.recurrent import acceptance_threshold, recurrent_generate, summarise

    p = params.generation
    cfg = p.recurrent
    seed = p.evaluate.product_seed if product_seed is None else product_seed
    if queue is not None and seed == p.evaluate.product_seed:
        raise InputError(
            f"--queue would turn the evaluation's products (seed {seed}) into training labels: pass another "
            "--product-seed"
        )
    items = product_source(params).products(products, seed, "test", p.evaluate.categories)
    denoiser = denoiser_from(generator, controlnet, params, for_evaluation=False)
    judged_by = judge_from(params, judge)
    tap = None
    if probe is not None:
        cfg, tap = probe_for(probe, generator, controlnet, judged_by, cfg)
    pool = pool_for(controlnet, p.prompts)
    stats = recurrent_generate(denoiser, judged_by, items, pool, cfg, keep_images=True, probe=tap)
    if queue is not None:
        from reliable_ad.review.queue import recurrent_queue, write_queue

        tau = acceptance_threshold(cfg, judged_by)
        write_queue(queue, recurrent_queue(stats.attempts, items, tau, judge_version(judge)))
    (out / "accepted").mkdir(parents=True, exist_ok=True)
    for attempt in stats.attempts:
        if attempt.status == "accepted" and attempt.image is not None:
            Image.fromarray(attempt.image).save(out / "accepted" / f"{attempt.product}_a{attempt.attempt}.png")
    pd.DataFrame([a.row() for a in stats.attempts]).to_parquet(out / "attempts.parquet", index=False)
    return summarise(stats, len(items), cfg.max_attempts)


def evaluate_generation(
    params: Params,
    generator: Path,
    controlnet: Path | None,
    judge: str | Path,
    metrics: Path,
    plots: Path,
    records: Path,
    rfft_controlnet: Path | None = None,
    probes: Path | None = None,
) -> dict[str, Any]:
    """Evaluate recurrent generation into `metrics`, `plots` and `records` (DVC), and log the same as the MLflow
    run "evaluate-generation" with the settings and the models' folder hashes; adds its `mlflow_run_id`. With
    `rfft_controlnet` the tuned generator runs the same schedulers; each generator's probe goes to `probes`."""
    from reliable_ad.generation.cost import Candidate
    from reliable_ad.generation.evaluate import evaluate_generation as run
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.registry.tracking import flat_params, log_run, model_lineage

    p = params.generation
    judged_by = judge_from(params, judge)
    base_controlnet = controlnet or generator / "controlnet"
    tuned = None
    if rfft_controlnet is not None:
        tuned = Candidate(
            "rfft_",
            denoiser_from(generator, rfft_controlnet, params),
            model_versions(generator, rfft_controlnet, judged_by),
        )
    result = run(
        denoiser_from(generator, controlnet, params),
        judged_by,
        load_prompt_pool(p.prompts),
        p.evaluate,
        product_source(params),
        metrics,
        plots,
        records,
        model_versions(generator, controlnet, judged_by),
        probes,
        tuned,
        rfft_controlnet is not None and generates_the_same(rfft_controlnet, base_controlnet),
    )
    models = {"generator": generator, "controlnet": base_controlnet, "judge": judge}
    outputs = {"plots": plots, "records": records, "metrics": metrics}
    if rfft_controlnet is not None:
        models["rfft_controlnet"] = rfft_controlnet
    if probes is not None:
        outputs["probes"] = probes
    run_id = log_run(
        "evaluate-generation",
        result,
        flat_params(p.evaluate.model_dump(mode="json")) | {"prompts": str(p.prompts)},
        model_lineage(models),
        outputs,
        params.paths.experiment,
    )
    return {**result, "mlflow_run_id": run_id}


def model_versions(generator: Path, controlnet: Path | None, judge: Any) -> Any:
    """What a probe belongs to: the folder hashes of the generator, the ControlNet used and the judge."""
    from reliable_ad.data.hashing import folder_hash
    from reliable_ad.generation.probe import ModelVersions

    if judge.source is None:
        raise InputError("the judge was not loaded from a folder: a probe for it could not name its version")
    return ModelVersions(
        folder_hash(generator), folder_hash(controlnet or generator / "controlnet"), folder_hash(judge.source)
    )


def probe_for(
    folder: Path, generator: Path, controlnet: Path | None, judge: Any, cfg: RecurrentConfig
) -> tuple[RecurrentConfig, Any]:
    """A saved probe, refused unless it was trained for these models and this schedule, and `cfg` with the
    early check calibrated with it switched on."""
    from reliable_ad.generation.probe import Probe, ProbeError

    probe = Probe.load(folder)
    probe.check(model_versions(generator, controlnet, judge), cfg.steps)
    early = probe.report.get("early")
    if not isinstance(early, dict):
        raise ProbeError(f"{folder}: its calibration found no early check within the false-abort budget")
    check = {"early_step": early["step"], "early_threshold": early["threshold"], "early_by": early["by"]}
    return cfg.model_copy(update={"early_reject": True, **check}), probe


def generation_shard(
    params: Params, generator: Path, controlnet: Path | None, judge: str, shard: int, shards: int, products: int
) -> dict[str, Any]:
    """Shard `shard` of `shards` of a large recurrent-generation run over `products` held-out products: its
    slice of the products, every attempt and its costs (for `merge_generation_shards`)."""
    from reliable_ad.generation.prompts import pool_for
    from reliable_ad.generation.recurrent import recurrent_generate

    per = -(-products // shards)
    start, count = shard * per, max(0, min(per, products - shard * per))
    cfg = params.generation.evaluate
    items = product_source(params).products(count, cfg.product_seed, "test", cfg.categories, start)
    stats = recurrent_generate(
        denoiser_from(generator, controlnet, params),
        judge_from(params, judge),
        items,
        pool_for(controlnet, params.generation.prompts),
        cfg.recurrent,
        progress=False,
    )
    return {
        "attempts": [a.row() for a in stats.attempts],
        "unet_evals": stats.unet_evals,
        "unet_calls": stats.unet_calls,
        "seconds": stats.seconds,
    }


def merge_generation_shards(params: Params, parts: list[dict[str, Any]], products: int) -> dict[str, Any]:
    """The shards' attempts as one run, summarised as a whole run is (`recurrent.summarise`: the same figures,
    early rejection's aborted attempts included); seconds add up to the compute spent."""
    from reliable_ad.generation.recurrent import Attempt, RunStats, summarise

    stats = RunStats(
        [Attempt(**row) for part in parts for row in part["attempts"]],
        sum(part["unet_evals"] for part in parts),
        sum(part["seconds"] for part in parts),
        "sharded",
        sum(part["unet_calls"] for part in parts),
    )
    return {"shards": len(parts), **summarise(stats, products, params.generation.evaluate.recurrent.max_attempts)}


def pretrain_generator(params: Params, out: Path, resume: bool = True) -> dict[str, Any]:
    """Pre-train the tiny generator (`generation.pretrain`) into `out`, resuming its checkpoints."""
    from reliable_ad.training.pretrain_generator import pretrain_tiny_generator

    return pretrain_tiny_generator(params.generation.pretrain, out, resume=resume)


def export_generator(params: Params, checkpoint: Path, out: Path) -> dict[str, Any]:
    """The EMA weights of a pre-training checkpoint as a generator folder, with its sample grid and model card."""
    from reliable_ad.training.pretrain_generator import export_generator as run

    return run(params.generation.pretrain, checkpoint, out)
