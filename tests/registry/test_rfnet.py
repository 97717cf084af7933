"""The judge's gate, handed predictions: it computes the paired interval over products and decides."""

import json

import numpy as np
import pytest

from reliable_ad.models.config import RFNetConfig
from reliable_ad.paths import Paths
from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.models import CHAMPION, by_alias
from reliable_ad.registry.rfnet import LabelSetMismatch, check_comparable, register_rfnet
from reliable_ad.training.rfnet_eval import Predictions

EXPERIMENT = Paths().experiment
GATE = GateConfig(resamples=200)
LABELS = RFNetConfig().labels


def _predictions(right: float, rows: int = 120, shuffle: int = 0) -> Predictions:
    """Rows of 30 products, a share `right` of them classified correctly (the same rows whatever `right`)."""
    rng = np.random.default_rng(7)
    target = rng.integers(0, len(LABELS), rows)
    predicted = np.where(np.arange(rows) < right * rows, target, (target + 1) % len(LABELS))
    ids = [f"s-{i}" for i in np.roll(np.arange(rows), shuffle)]
    return Predictions(
        ids, [f"p{i % 30}" for i in range(rows)], target, np.eye(len(LABELS), dtype=np.float32)[predicted],
        list(LABELS), ["ds"] * rows,
    )  # fmt: skip


def _register(folder, ours, theirs, champion, **kw):
    return register_rfnet(folder, RFNetConfig(), folder.parent, ours, theirs, champion, GATE, EXPERIMENT, **kw)


def test_a_clearly_better_candidate_replaces_the_champion(tracking, tmp_path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "model")
    first = _register(tmp_path / "model", _predictions(0.5), None, None, decision_file=tmp_path / "gate.json")
    assert first.promoted and "first valid candidate" in first.reason
    assert json.loads((tmp_path / "gate.json").read_text())["version"] == first.version
    champion = by_alias("rfnet", CHAMPION)
    same = _register(tmp_path / "model", _predictions(0.5), _predictions(0.5), champion)
    assert not same.promoted and same.delta == 0.0
    better = _register(tmp_path / "model", _predictions(0.9), _predictions(0.5), champion)
    assert better.promoted and better.ci_low > 0 and better.champion_version == first.version
    assert by_alias("rfnet", CHAMPION).version == better.version


def test_predictions_of_other_rows_are_refused(tracking, tmp_path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "model")
    with pytest.raises(RuntimeError, match="not evaluated on the same items"):
        _register(tmp_path / "model", _predictions(0.9), _predictions(0.5, shuffle=1), None)


def test_a_champion_of_another_label_set_cannot_be_compared() -> None:
    five = RFNetConfig(labels=["available", "space_mismatch", "size_mismatch", "indistinctiveness", "unsuitable"])
    check_comparable(RFNetConfig(), RFNetConfig(), "1")
    with pytest.raises(LabelSetMismatch, match="champion v3's"):
        check_comparable(RFNetConfig(), five, "3")
