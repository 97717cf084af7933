"""Promotion: a decision moves the aliases and is written onto the version; by hand only after a passed gate;
rolled back to the previous champion; two processes promoting at the same moment leave exactly one champion."""

import multiprocessing as mp
import os

from reliable_ad.paths import Paths
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.gate import decide, rollback
from reliable_ad.registry.models import CHAMPION, by_alias, get_version, log_model_folder
from reliable_ad.registry.tracking import setup
from reliable_ad.stats import PairedDelta

EXPERIMENT = Paths().experiment


def _versions(folder, count: int) -> list[str]:
    """`count` registered versions of rfnet (the same files)."""
    import mlflow

    experiment = setup(EXPERIMENT)
    versions = []
    for _ in range(count):
        with mlflow.start_run(experiment_id=experiment):
            versions.append(log_model_folder("rfnet", folder, "rfnet").version)
    return versions


def test_winner_is_promoted_and_can_be_rolled_back(tracking, tmp_path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "m")
    first, candidate = _versions(tmp_path / "m", 2)
    decide("rfnet", first, "macro_f1", 0.7, None, None, GateConfig())
    better = PairedDelta(delta=0.1, low=0.05, high=0.15, candidate=0.8, baseline=0.7, n=100, confidence=0.95)
    decision = decide("rfnet", candidate, "macro_f1", 0.8, better, first, GateConfig(margin=0.01))
    assert decision.promoted and "excludes the margin" in decision.reason
    assert by_alias("rfnet", CHAMPION).version == candidate
    assert rollback("rfnet") == first
    assert by_alias("rfnet", CHAMPION).version == first


def _promote(version: str, barrier, env: dict) -> None:
    os.environ.update(env)
    setup(EXPERIMENT)
    better = PairedDelta(delta=0.1, low=0.05, high=0.15, candidate=0.9, baseline=0.8, n=50, confidence=0.95)
    barrier.wait()
    decide("rfnet", version, "macro_f1", 0.9, better, "1", GateConfig())


def test_racing_promotions(tracking, tmp_path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "m")
    versions = _versions(tmp_path / "m", 3)
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
