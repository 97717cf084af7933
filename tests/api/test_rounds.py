"""Feedback rounds through the API, on tiny settings: what a round produces, a resume after a kill, a bad batch."""

import json
import re
from pathlib import Path

import pytest

from reliable_ad.api import (
    RoundData,
    RoundError,
    feedback_round,
    feedback_rounds,
    ingest_feedback,
    regularizer_ablation,
    rounds,
)
from reliable_ad.api.common import generates_the_same
from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.params import Params

PROMPTS = Path(__file__).parents[2] / "configs" / "prompts_embedded.json"


def _params() -> Params:
    return Params.model_validate(
        {
            "data": {"validate": {"workers": 1, "data_docs": False}},
            "rfnet": {"train": {"batch_size": 16, "threads": 1, "checkpoint_every": 1000}, "gate": {"resamples": 100}},
            "generation": {
                "prompts": str(PROMPTS),
                "evaluate": {
                    "products": 3,
                    "recurrent": {"batch_size": 4, "max_attempts": 2, "steps": 3, "guidance_scale": 2.0},
                },
                "rfft": {
                    "steps": 2,
                    "batch_size": 2,
                    "inference_steps": 3,
                    "last_k": 2,
                    "products": 4,
                    "lr": 1e-3,
                    "threads": 1,
                    "select": {"every": 1, "products": 2},
                },
                "gate": {"resamples": 100},
            },
            "rounds": {"count": 1, "products": 6, "rfnet_epochs": 1, "unseen_products": 2, "method": "rfft"},
        }
    )


@pytest.fixture
def world(tiny_shards: Path, generator: Path, tmp_path: Path, tracking: Path, make_rfnet) -> dict:
    judge = tmp_path / "judge"
    make_rfnet().save(judge)
    root = tiny_shards.parent / "ds"
    data = RoundData(root, root / "manifest.parquet", (), tmp_path / "data-rounds", tmp_path / "reports")
    return {"judge": judge, "controlnet": generator / "controlnet", "generator": generator, "data": data}


def test_a_round_labels_new_images_retrains_tunes_and_resumes_after_a_kill(world, tmp_path, monkeypatch) -> None:
    params, out = _params(), tmp_path / "rounds"
    calls = {"simulate": 0}
    simulate, rfft_train = rounds.simulate_feedback, rounds.rfft_train

    def counted(*args, **kwargs):
        calls["simulate"] += 1
        return simulate(*args, **kwargs)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during RFFT")

    monkeypatch.setattr(rounds, "simulate_feedback", counted)
    monkeypatch.setattr(rounds, "rfft_train", killed)
    args = (params, world["generator"], world["judge"], world["controlnet"], world["data"], out)
    with pytest.raises(KeyboardInterrupt):
        feedback_rounds(*args)
    state = json.loads((out / "round-1" / "state.json").read_text())
    assert set(state["done"]) == {"feedback", "judge"}  # labelled, ingested, judge retrained and gated
    monkeypatch.setattr(rounds, "rfft_train", rfft_train)
    summary = feedback_rounds(*args, metrics=tmp_path / "rounds.json", plots=tmp_path / "plots")
    assert calls["simulate"] == 1  # the resumed round did not generate and label its batch again
    (row,) = summary["rounds"]
    assert row["labels"] and sum(row["labels"].values()) == 6
    assert row["human_labels"]["method"] == 6 + 2 * 3  # the batch, and 2 products x 3 snapshot candidates
    assert row["human_labels"]["counting"] > 0
    assert {"delta", "hacking_gap_tuned", "attempts_per_available_tuned"} <= set(row["comparison"])
    assert row["unseen"]["products"] == 2
    assert json.loads((tmp_path / "rounds.json").read_text())["final"] == pytest.approx(row["comparison"], nan_ok=True)
    assert (out / "round-1" / "update" / "selection.json").exists()
    # the round's own gain is counted against the ControlNet it started from (no champion yet: the base's)
    assert row["vs_champion"]["champion_version"] is None and row["vs_champion"]["delta"] is not None
    points = json.loads((tmp_path / "plots" / "rounds_rates.json").read_text())["points"]
    assert [p["round"] for p in points] == [0, 1] and points[1]["reviewer"] == row["comparison"][
        "available_rate_first_reviewer_tuned"
    ]
    assert (tmp_path / "plots" / "rounds_rates.png").stat().st_size > 5_000
    import mlflow

    versions = {v.name: v for v in mlflow.MlflowClient().search_model_versions()}
    run = mlflow.get_run(versions["reliable-controlnet"].run_id)
    assert run.data.tags["round"] == "1" and run.data.tags["round.data_version"] == row["data_version"]
    again = feedback_rounds(*args)  # everything done: nothing is redone
    assert calls["simulate"] == 1 and again["rounds"][0]["comparison"] == pytest.approx(row["comparison"], nan_ok=True)
    # one more round: round 1 is kept (how many follow is not one of its inputs), round 2 starts from its results
    params.rounds.count = 2
    more = feedback_rounds(*args)
    assert calls["simulate"] == 2 and more["rounds"][0]["comparison"] == pytest.approx(row["comparison"], nan_ok=True)
    assert more["rounds"][1]["round"] == 2 and more["rounds"][1]["vs_champion"]["delta"] is not None


def test_a_batch_that_fails_validation_stops_the_round_and_ingests_nothing(world, tmp_path) -> None:
    batch = tmp_path / "batch"
    write_synth(SynthConfig(n=8, seed=41), batch)
    entries = [json.loads(line) for line in (batch / "metadata.jsonl").read_text().splitlines()]
    entries[0]["split"] = "train" if entries[1]["split"] == "test" else "test"  # one product in two splits
    entries[0]["product_id"] = entries[1]["product_id"]
    (batch / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    dataset = tmp_path / "feedback"
    ingested = ingest_feedback(_params(), batch, dataset, tmp_path / "reports").model_dump()
    assert ingested["status"] == "rejected" and ingested["rows_accepted"] == 0
    data = RoundData(world["data"].root, world["data"].manifest, (dataset,), tmp_path / "r", tmp_path / "reports")
    with pytest.raises(RoundError, match=f"round 1: the feedback batch {batch} failed validation"):
        feedback_round(_params(), 1, world["generator"], world["judge"], world["controlnet"], data, tmp_path / "o",
                       ingested=ingested, tune=False)  # fmt: skip
    assert not (tmp_path / "o" / "round-1" / "rfnet").exists()


def test_the_regulariser_ablation_gives_one_row_per_regulariser_and_round(world, tmp_path) -> None:
    from pydantic import ValidationError

    params = _params()
    params.rounds.count = 0  # the first RFFT of each regulariser only: rounds are the test above
    args = (params, world["generator"], world["judge"], world["data"], tmp_path / "ablation")
    rows = regularizer_ablation(*args, ["none", "cc"], tmp_path / "a.json", tmp_path / "a.md")
    assert list(rows) == ["none", "cc"] and all(len(r) == 1 and r[0]["round"] == 0 for r in rows.values())
    table = (tmp_path / "a.md").read_text().splitlines()
    assert table[0].startswith("| regulariser | round | reviewer Δ") and len(table) == 2 + 2
    assert json.loads((tmp_path / "a.json").read_text())["cc"][0]["guard_ok"] in (True, False)
    with pytest.raises(ValidationError, match="regularizer"):
        regularizer_ablation(*args, ["l2"])


def test_a_round_can_learn_from_its_labels_directly_and_counts_them(world, tmp_path) -> None:
    params = _params()
    params.rounds.method = "prompts"
    params.generation.methods.select.products = 2
    args = (params, 1, world["generator"], world["judge"], world["controlnet"], world["data"], tmp_path / "o")
    row = feedback_round(*args, progress=False)
    selection = json.loads((tmp_path / "o" / "round-1" / "update" / "selection.json").read_text())
    assert row["human_labels"]["method"] == 6 + 2 * 2  # the batch, and 2 products x (start, the learnt pool)
    assert row["selected_step"] == selection["chosen_step"] and "delta" in row["comparison"]
    # the random tiny generator makes nothing people accept: KTO cannot learn from that round; the round says
    # why, keeps its ControlNet and goes on (a lopsided batch does not stop the loop)
    params.rounds.method = "kto"
    refused = feedback_round(params, 1, *args[2:], progress=False)
    assert re.search(r"KTO needs desirable and undesirable images.*has 0 desirable", refused["method_refused"])
    assert refused["comparison"]["delta"] == 0.0 and not refused["controlnet_promoted"]
    assert generates_the_same(tmp_path / "o" / "round-1" / "update" / "controlnet", world["controlnet"])
    assert row["method_refused"] is None


def test_a_round_method_not_in_the_set_is_refused_listing_the_set() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown method 'ppo'.*methods are prompts, sft, kto, dpo"):
        Params.model_validate({"rounds": {"method": "ppo"}})
