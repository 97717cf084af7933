"""The judge's gate end to end: candidate and champion evaluated on the same test split, then registered."""

from pathlib import Path

import pytest

from reliable_ad import api
from reliable_ad.data.hashing import sha256_of
from reliable_ad.params import Params
from reliable_ad.registry.gate import promote, rollback
from reliable_ad.registry.models import CHALLENGER, CHAMPION, RegistryError, by_alias, list_versions
from reliable_ad.registry.rfnet import LabelSetMismatch

PARAMS = Params(rfnet={"gate": {"resamples": 200}})


def _model(tmp_path: Path, name: str, make_rfnet, **config) -> Path:
    make_rfnet(**config, vocabulary=["red", "cm"]).save(tmp_path / name)
    return tmp_path / name


def test_first_candidate_is_promoted_and_an_equal_one_is_not(tiny_shards, tracking, tmp_path, make_rfnet) -> None:
    model = _model(tmp_path, "a", make_rfnet)
    first = api.register_rfnet(PARAMS, model, tiny_shards, tmp_path / "m" / "rfnet_gate.json")
    assert first["promoted"] and "first valid candidate" in first["reason"]
    assert (tmp_path / "m" / "rfnet_gate.json").exists()
    champion = by_alias("rfnet", CHAMPION)
    assert champion is not None and champion.version == first["version"]
    assert champion.tags["gate.promoted"] == "true"
    assert champion.tags["gate.metric"] == "macro_f1" and float(champion.tags["gate.candidate"]) >= 0

    # the same weights again: no improvement, so the interval cannot exclude zero
    second = api.register_rfnet(PARAMS, model, tiny_shards, None)
    assert not second["promoted"]
    assert second["delta"] == pytest.approx(0.0) and second["ci_low"] <= 0.0 <= second["ci_high"]
    assert by_alias("rfnet", CHAMPION).version == first["version"]
    assert by_alias("rfnet", CHALLENGER).version == second["version"]
    with pytest.raises(RegistryError, match="failed its gate"):
        promote("rfnet", second["version"])
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback("rfnet")
    assert [v.version for v in list_versions("rfnet")] == [first["version"], second["version"]]
    rows = api.list_models(PARAMS, "rfnet")  # what `rad models list` prints and the report shows
    assert [(r["version"], r["aliases"], r["promoted"]) for r in rows] == [
        (first["version"], ["champion"], True),
        (second["version"], ["challenger"], False),
    ]


def test_a_candidate_with_another_label_set_is_refused(tiny_shards, tracking, tmp_path, make_rfnet) -> None:
    api.register_rfnet(PARAMS, _model(tmp_path, "six", make_rfnet), tiny_shards, None)
    five = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]
    with pytest.raises(LabelSetMismatch, match="refusing to compare"):
        api.register_rfnet(PARAMS, _model(tmp_path, "five", make_rfnet, labels=five), tiny_shards, None)


def test_a_trained_candidate_logs_its_training_settings_and_data(tiny_shards, tracking, tmp_path) -> None:
    from mlflow import MlflowClient

    small = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1, "vocabulary": ["red", "cm"]}
    params = PARAMS.model_copy(deep=True)
    params.rfnet.train = params.rfnet.train.model_validate(
        {"model": small, "epochs": 1, "batch_size": 16, "lr": 1e-3, "threads": 1}
    )
    api.train_rfnet(params, tiny_shards, tmp_path / "run")
    decision = api.register_rfnet(params, tmp_path / "run" / "model", tiny_shards, None)
    run = MlflowClient().get_run(MlflowClient().get_model_version("rfnet", decision["version"]).run_id)
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.lr"] == "0.001"
    assert run.data.tags["trained_on.shards.index_sha256"] == sha256_of(tiny_shards / "index.json")
    assert run.data.tags["data.shards.path"] == tiny_shards.as_posix() and run.data.tags["git_commit"]
