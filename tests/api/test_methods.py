"""The methods that learn from people's labels, through the API on tiny settings: one batch, one table."""

import json
from pathlib import Path

import pytest

from reliable_ad.api import compare_methods, label_batch
from reliable_ad.api.common import generates_the_same
from reliable_ad.api.methods import METHOD_COLUMNS
from reliable_ad.errors import InputError
from reliable_ad.generation.prompts import POOL_FILE
from reliable_ad.generation.simulated_feedback import LABEL_IDS
from reliable_ad.params import Params
from reliable_ad.training.from_labels import LabelBatchError

PROMPTS = Path(__file__).parents[2] / "configs" / "prompts_embedded.json"


def _params(methods: list[str]) -> Params:
    return Params.model_validate(
        {
            "generation": {
                "prompts": str(PROMPTS),
                "evaluate": {
                    "products": 3,
                    "recurrent": {"batch_size": 4, "max_attempts": 2, "steps": 3, "guidance_scale": 2.0},
                },
                "gate": {"resamples": 100},
                "methods": {
                    "methods": methods,
                    "batch": {"products": 6, "images_per_product": 2},
                    "tune": {"steps": 2, "batch_size": 4, "snapshot_every": 1, "threads": 1, "lr": 1e-3},
                    "select": {"products": 2},
                },
            },
            "rounds": {"unseen_products": 2},
        }
    )


def test_every_method_learns_from_one_batch_and_gets_a_row_counted_by_the_reviewer(
    generator: Path, tmp_path: Path, make_rfnet, tracking: Path
) -> None:
    judge = tmp_path / "judge"
    make_rfnet().save(judge)
    params = _params(["prompts", "kto", "prompts+kto"])
    made = label_batch(params, generator, tmp_path / "batch", progress=False)
    assert made["rows"] == 12 and sum(made["labels"].values()) == 12
    # the random tiny generator makes nothing usable: people's verdicts stand in, one of each per product
    label_file = tmp_path / "batch" / "label.txt"
    names = [line.split("\t")[0] for line in label_file.read_text().splitlines()]
    verdicts = [LABEL_IDS["available" if name.endswith("-1.png") else "space_mismatch"] for name in names]
    label_file.write_text("".join(f"{n}\t{v}\n" for n, v in zip(names, verdicts, strict=True)))
    result = compare_methods(params, generator, judge, tmp_path / "batch", tmp_path / "methods", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["methods"].keys() == result["methods"].keys()
    assert result["batch"]["rows"] == 12 and set(result["methods"]) == {"prompts", "kto", "prompts+kto"}
    for name, row in result["methods"].items():
        assert set(METHOD_COLUMNS) <= set(row), name
        assert row["reviewer_delta_ci_low"] <= row["reviewer_delta"] <= row["reviewer_delta_ci_high"]
        # the batch's labels and the selection's (step 0 and each candidate on 2 validation products)
        candidates = 1 if name == "prompts" else 2
        assert row["human_labels"] == 12 + 2 * (1 + candidates)
        tuned = tmp_path / "methods" / name.replace("+", "-") / "controlnet"
        # a learnt pool travels with the ControlNet when the selection kept it
        assert (tuned / POOL_FILE).exists() == ("prompts" in name and bool(row["chosen_step"]))
    assert (tmp_path / "methods" / "methods.md").read_text().count("\n") == 2 + 3
    # the method that gained most on the validation products goes to the gate, when any kept more than its start
    kept = {name: row["validation_delta"] for name, row in result["methods"].items() if row["chosen_step"]}
    if kept:
        assert result["registered"]["method"] == max(kept, key=lambda name: kept[name])
        assert (tmp_path / "methods" / "gate.json").exists()
    else:
        assert result["registered"] is None
    # what the rounds start from: the registry's champion (the method just promoted), else the one the pipeline had
    promoted = result["registered"] is not None and result["registered"]["promoted"]
    carried = result["registered"]["method"] if promoted else None
    assert result["champion"]["promoted_now"] == carried and result["champion"]["from_registry"] == promoted
    source = tmp_path / "methods" / carried.replace("+", "-") / "controlnet" if carried else generator / "controlnet"
    assert generates_the_same(tmp_path / "methods" / "champion", source)
    # the table is an MLflow run too: each method's figures, the table and the grids
    import mlflow

    run = mlflow.get_run(result["mlflow_run_id"])
    row = result["methods"]["prompts+kto"]
    assert run.info.run_name == "compare-methods"
    assert run.data.metrics["prompts-kto.reviewer_delta"] == row["reviewer_delta"]
    assert run.data.metrics["kto.human_labels"] == result["methods"]["kto"]["human_labels"]
    assert run.data.tags["data.batch.path"] == (tmp_path / "batch").as_posix()
    listed = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "grids/prompts-kto")}
    assert listed == {"grids/prompts-kto/grid.png"}


def test_a_batch_from_another_generator_version_is_refused(generator: Path, tmp_path: Path, make_rfnet) -> None:
    params = _params(["prompts"])
    label_batch(params, generator, tmp_path / "batch", progress=False)
    meta = tmp_path / "batch" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    meta.write_text("".join(json.dumps({**row, "generator": "controlnet-0123456789ab"}) + "\n" for row in rows))
    with pytest.raises(LabelBatchError, match="made by generator controlnet-0123456789ab"):
        compare_methods(params, generator, tmp_path / "judge", tmp_path / "batch", tmp_path / "methods")


def test_a_current_controlnet_that_is_not_there_is_refused_naming_it(generator: Path, tmp_path: Path) -> None:
    missing = tmp_path / "rfft" / "controlnet"
    with pytest.raises(InputError, match=f"{missing}: no ControlNet there"):
        compare_methods(_params(["prompts"]), generator, tmp_path / "judge", tmp_path / "batch", tmp_path / "m",
                        current=missing)  # fmt: skip
