import json
from pathlib import Path

import pytest

from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet
from reliable_ad.training.config import RFNetTrainConfig
from reliable_ad.training.rfnet_ablation import ablate, variants


def _cfg() -> RFNetTrainConfig:
    model = RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1)
    return RFNetTrainConfig(model=model, epochs=1, batch_size=16, lr=1e-3, threads=1)


def test_variants_follow_the_paper_table() -> None:
    table = variants()
    assert table["generated only"] == ["generated"]
    assert "caption" not in table["without caption"] and len(table["all"]) == 5
    assert len(table) == 7


def test_ablation_of_chosen_variants_writes_json_and_table(tiny_shards: Path, tmp_path: Path) -> None:
    results = ablate(
        _cfg(),
        tiny_shards,
        tmp_path / "runs",
        tmp_path / "ablation.json",
        tmp_path / "ablation.md",
        only=["all", "generated only"],
    )
    assert set(results) == {"all", "generated only"}
    assert json.loads((tmp_path / "ablation.json").read_text())["generated only"]["modalities"] == ["generated"]
    table = (tmp_path / "ablation.md").read_text()
    assert "| generated only |" in table and "| all |" in table and "87.58" in table  # the paper's AP beside ours
    assert RFNet.load(tmp_path / "runs" / "generated_only" / "model").config.modalities == ["generated"]


def test_unknown_variant_is_refused_before_any_training(tiny_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ablation variants \\['without colour'\\]"):
        ablate(_cfg(), tiny_shards, tmp_path / "runs", tmp_path / "a.json", tmp_path / "a.md", only=["without colour"])
    assert not (tmp_path / "runs").exists()
