"""Generation through the API: the evaluation logged to MLflow as written, shards merged as one run, a catalog."""

import json
import math

import pandas as pd
import pytest

from reliable_ad import api
from reliable_ad.errors import InputError
from reliable_ad.generation.config import GenerationEvalConfig, RecurrentConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.params import GenerationParams, Params

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
RECURRENT = RecurrentConfig(batch_size=2, max_attempts=2, steps=3, guidance_scale=2.0, threshold=0.1)


def test_the_evaluation_is_logged_to_mlflow_as_written(generator, make_rfnet, tmp_path, tracking) -> None:
    from mlflow.tracking import MlflowClient

    from reliable_ad.data.hashing import folder_hash

    make_rfnet().save(tmp_path / "judge")
    (tmp_path / "pool.json").write_text(json.dumps([entry.model_dump() for entry in POOL]))
    cfg = GenerationEvalConfig(
        products=2, calibration_products=2, probe_steps=[1], probe_thresholds=[0.5], recurrent=RECURRENT
    )
    params = Params(generation=GenerationParams(prompts=tmp_path / "pool.json", evaluate=cfg))
    out = tmp_path / "out"
    result = api.evaluate_generation(
        params,
        generator,
        None,
        str(tmp_path / "judge"),
        out / "generation.json",
        out / "plots",
        out / "attempts.parquet",
        rfft_controlnet=generator / "controlnet",  # the same weights: only the wiring is tested
    )

    client = MlflowClient()
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.run_name == "evaluate-generation"
    written = json.loads((out / "generation.json").read_text())
    numbers = {k: v for k, v in written.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert {"available_rate_first_rfnet", "unet_evals_per_accept", "false_abort_rate"} <= set(numbers)
    for key, expected in numbers.items():
        logged = run.data.metrics[key]
        assert (math.isnan(logged) and math.isnan(expected)) or logged == pytest.approx(expected), key
    assert "runs" not in run.data.metrics and "early_rejection" not in run.data.metrics  # nested: in the JSON
    assert run.data.params["products"] == "2" and run.data.params["recurrent.steps"] == "3"
    assert run.data.params["max_false_abort"] == str(cfg.max_false_abort)
    tags = run.data.tags
    assert tags["model.generator.folder_hash"] == folder_hash(generator)
    assert tags["model.controlnet.folder_hash"] == folder_hash(generator / "controlnet")
    assert tags["model.judge.folder_hash"] == folder_hash(tmp_path / "judge")
    assert tags["model.rfft_controlnet.folder_hash"] == tags["model.controlnet.folder_hash"]
    assert {"rfft_plain", "unet_evals_per_usable_rfft_plain"} <= set(written["runs"]) | set(run.data.metrics)
    assert tags["git_commit"]
    artifacts = {
        a.path for folder in ("plots", "records", "metrics") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"plots/generation_curves.png", "records/attempts.parquet", "metrics/generation.json"} <= artifacts


def _attempt(product: str, attempt: int, status: str, reviewer: str | None) -> dict:
    return {
        "product": product,
        "attempt": attempt,
        "seed": attempt,
        "prompt": "p",
        "status": status,
        "step_reached": 3,
        "p_available": 0.5,
        "judge_label": "available",
        "reviewer_label": reviewer,
        "wall_s": 0.1,
    }


def test_shards_merge_into_the_figures_of_one_run() -> None:
    """An aborted first attempt has no reviewer label: it counts as no first verdict, as a whole run counts it
    (the flow once counted it as 'not available', so its figures changed once early rejection was on)."""
    parts = [
        {
            "attempts": [_attempt("a", 1, "accepted", "available"), _attempt("b", 1, "aborted", None)],
            "unet_evals": 4,
            "unet_calls": 2,
            "seconds": 1.0,
        },
        {
            "attempts": [_attempt("b", 2, "accepted", "space_mismatch"), _attempt("c", 1, "rejected", "size_mismatch")],
            "unet_evals": 6,
            "unet_calls": 3,
            "seconds": 2.0,
        },
    ]
    merged = api.merge_generation_shards(Params(), parts, products=3)
    assert merged["shards"] == 2 and merged["attempts_total"] == 4 and merged["unet_evals"] == 10
    assert merged["available_rate_first_rfnet"] == pytest.approx(1 / 3)
    assert merged["available_rate_first_reviewer"] == pytest.approx(1 / 2)  # a and c reviewed (b aborted): not 1 / 3
    assert merged["abandoned_share"] == pytest.approx(1 / 3) and merged["seconds"] == 3.0


# the real world's route: a team's catalog of product photos (never drawn by RF1M-synth) through recurrent
# generation, RFFT and the evaluation, on the tiny generator, with the same API calls as the embedded world
def _catalog_params(catalog, reviewer: str) -> Params:
    return Params.model_validate(
        {
            "data": {"catalog": {"path": str(catalog), "reviewer": reviewer}},
            "generation": {
                "evaluate": {
                    "products": 2,
                    "recurrent": {"batch_size": 2, "max_attempts": 2, "steps": 3, "guidance_scale": 2.0},
                },
                "rfft": {
                    "steps": 2, "batch_size": 2, "inference_steps": 3, "last_k": 2, "products": 4, "lr": 1e-3,
                    "threads": 1, "select": {"every": 1, "products": 2},
                },
                "gate": {"resamples": 100},
            },
        }
    )  # fmt: skip


def test_a_catalog_runs_recurrent_generation_rfft_and_the_evaluation(
    generator, make_rfnet, tmp_path, tracking, write_catalog
) -> None:
    catalog = write_catalog(tmp_path / "catalog")
    judge = tmp_path / "judge"
    make_rfnet().save(judge)
    params = _catalog_params(catalog, "simulated")
    titles = {f"item {k}" for k in range(20)}
    out = tmp_path / "recurrent"
    api.recurrent(params, generator, None, judge, 2, out, product_seed=7)
    attempts = pd.read_parquet(out / "attempts.parquet")
    assert set(attempts["product"]) <= titles and attempts["reviewer_label"].notna().all()
    summary = api.rfft_train(params, generator, judge, tmp_path / "rfft", progress=False)
    assert summary["selection"]["human_labels"] > 0 and (tmp_path / "rfft" / "controlnet" / "config.json").exists()
    compared = api.compare_generators(params, generator, tmp_path / "rfft" / "controlnet", judge, None, None)
    assert compared["products"] == 2 and not math.isnan(compared["delta"])
    # people label a catalog's images later: the judge's figures now, the reviewer's NaN until they do
    people = _catalog_params(catalog, "people")
    unlabelled = api.compare_generators(people, generator, tmp_path / "rfft" / "controlnet", judge, None, None)
    assert math.isnan(unlabelled["available_rate_first_reviewer_base"])
    assert not math.isnan(unlabelled["available_rate_first_rfnet_base"])
    # a catalog has cut-outs only: RFFT's anchor on renders is refused, saying what to use
    people.generation.rfft.anchor = 0.5
    with pytest.raises(InputError, match="set anchor_data to accepted"):
        api.rfft_train(people, generator, judge, tmp_path / "anchored", progress=False)
