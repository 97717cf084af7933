"""Two processes promoting at the same moment leave exactly one champion and a consistent history."""

import multiprocessing as mp
import os

from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.gate import decide
from reliable_ad.registry.models import CHAMPION, by_alias, get_version, log_model_folder
from reliable_ad.registry.tracking import setup
from reliable_ad.stats import PairedDelta


def _promote(version: str, barrier, env: dict) -> None:
    os.environ.update(env)
    setup("reliable-ad")
    better = PairedDelta(delta=0.1, low=0.05, high=0.15, candidate=0.9, baseline=0.8, n=50, confidence=0.95)
    barrier.wait()
    decide("rfnet", version, "macro_f1", 0.9, better, "1", GateConfig())


def test_racing_promotions(tracking, tmp_path) -> None:
    import mlflow

    experiment = setup("reliable-ad")
    RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])).save(tmp_path / "m")
    versions = []
    for _ in range(3):
        with mlflow.start_run(experiment_id=experiment):
            versions.append(log_model_folder("rfnet", tmp_path / "m", "rfnet").version)
    decide("rfnet", versions[0], "macro_f1", 0.8, None, None, GateConfig())  # v1: the first champion
    env = {k: os.environ[k] for k in ("MLFLOW_TRACKING_URI", "RAD_ARTIFACT_ROOT")} | {"RAD_LOCK_DIR": str(tmp_path)}
    context = mp.get_context("spawn")
    barrier = context.Barrier(2)
    racers = [context.Process(target=_promote, args=(v, barrier, env)) for v in versions[1:]]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
        assert racer.exitcode == 0
    outcome = {v: get_version("rfnet", v).tags for v in versions[1:]}
    winners = [v for v, tags in outcome.items() if tags["gate.promoted"] == "true"]
    assert len(winners) == 1
    (winner,) = winners
    (loser,) = [v for v in outcome if v != winner]
    assert by_alias("rfnet", CHAMPION).version == winner
    assert outcome[winner]["gate.previous_champion"] == versions[0]
    assert outcome[loser]["gate.reason"].startswith(f"stale: the champion changed from 1 to v{winner}")
