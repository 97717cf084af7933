from pathlib import Path

import pytest

from reliable_ad.data.hashing import sha256_of
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.gate import decide, promote, rollback
from reliable_ad.registry.models import CHALLENGER, CHAMPION, RegistryError, by_alias, list_versions
from reliable_ad.registry.rfnet import LabelSetMismatch, register_rfnet
from reliable_ad.registry.tracking import setup
from reliable_ad.stats import PairedDelta

SMALL = {"width": 32, "tiny_channels": [8, 16, 32], "fusion_layers": 1, "vocabulary": ["red", "cm"]}
GATE = GateConfig(resamples=200)


def _model(tmp_path: Path, name: str, **kw) -> Path:
    folder = tmp_path / name
    RFNet(RFNetConfig(**SMALL, **kw)).save(folder)
    return folder


def test_first_candidate_is_promoted_and_an_equal_one_is_not(tiny_shards, tracking, tmp_path) -> None:
    first = register_rfnet(_model(tmp_path, "a"), tiny_shards, GATE, decision_file=tmp_path / "m" / "rfnet_gate.json")
    assert first.promoted and "first valid candidate" in first.reason
    assert (tmp_path / "m" / "rfnet_gate.json").exists()
    champion = by_alias("rfnet", CHAMPION)
    assert champion is not None and champion.version == first.version
    assert champion.tags["gate.promoted"] == "true"
    assert champion.tags["gate.metric"] == "macro_f1" and float(champion.tags["gate.candidate"]) >= 0

    # the same weights again: no improvement, so the interval cannot exclude zero
    second = register_rfnet(tmp_path / "a", tiny_shards, GATE)
    assert not second.promoted
    assert second.delta == pytest.approx(0.0) and second.ci_low <= 0.0 <= second.ci_high
    assert by_alias("rfnet", CHAMPION).version == first.version
    assert by_alias("rfnet", CHALLENGER).version == second.version
    with pytest.raises(RegistryError, match="failed its gate"):
        promote("rfnet", second.version)
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback("rfnet")
    assert [v.version for v in list_versions("rfnet")] == [first.version, second.version]


def test_a_candidate_with_another_label_set_is_refused(tiny_shards, tracking, tmp_path) -> None:
    register_rfnet(_model(tmp_path, "six"), tiny_shards, GATE)
    five = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]
    with pytest.raises(LabelSetMismatch, match="refusing to compare"):
        register_rfnet(_model(tmp_path, "five", labels=five), tiny_shards, GATE)


def test_winner_is_promoted_and_can_be_rolled_back(tiny_shards, tracking, tmp_path) -> None:
    register_rfnet(_model(tmp_path, "a"), tiny_shards, GATE)
    candidate = register_rfnet(tmp_path / "a", tiny_shards, GATE)  # registered, not promoted
    better = PairedDelta(delta=0.1, low=0.05, high=0.15, candidate=0.8, baseline=0.7, n=100, confidence=0.95)
    setup("reliable-ad")
    decision = decide("rfnet", candidate.version, "macro_f1", 0.8, better, "1", GateConfig(margin=0.01))
    assert decision.promoted and "excludes the margin" in decision.reason
    assert by_alias("rfnet", CHAMPION).version == candidate.version
    assert rollback("rfnet") == "1"
    assert by_alias("rfnet", CHAMPION).version == "1"


def test_a_trained_candidate_logs_its_training_settings_and_data(tiny_shards, tracking, tmp_path) -> None:
    from mlflow import MlflowClient

    from reliable_ad.training.config import RFNetTrainConfig
    from reliable_ad.training.rfnet import train_rfnet

    cfg = RFNetTrainConfig(model=RFNetConfig(**SMALL), epochs=1, batch_size=16, lr=1e-3, threads=1)
    train_rfnet(cfg, tiny_shards, tmp_path / "run")
    decision = register_rfnet(tmp_path / "run" / "model", tiny_shards, GATE)
    run = MlflowClient().get_run(MlflowClient().get_model_version("rfnet", decision.version).run_id)
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.lr"] == "0.001"
    assert run.data.tags["trained_on.shards.index_sha256"] == sha256_of(tiny_shards / "index.json")
    assert run.data.tags["data.shards.path"] == tiny_shards.as_posix() and run.data.tags["git_commit"]
