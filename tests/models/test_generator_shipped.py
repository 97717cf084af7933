"""The tiny generator shipped in git: small, documented, reproducible by the command on its card."""

import json
from pathlib import Path

import pytest
from PIL import Image

SHIPPED = Path(__file__).parents[2] / "models" / "tiny-generator"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((SHIPPED / "model_card.json").read_text())


def test_weights_are_small_safetensors() -> None:
    files = list((SHIPPED / "model").rglob("*.safetensors"))
    assert {f.parent.name for f in files} >= {"unet", "controlnet", "vae", "text_encoder"}
    assert sum(f.stat().st_size for f in files) <= 20 * 1024 * 1024
    assert not list((SHIPPED / "model").rglob("*.bin"))  # nothing loaded by unpickling


def test_card_says_how_it_was_made(card) -> None:
    for field in ("command", "synth_seed", "steps", "train_seconds", "machine", "sample_grid"):
        assert card.get(field) not in (None, ""), field
    assert card["command"].startswith("rad generator ") and card["train_seconds"] > 0
    with Image.open(SHIPPED / card["sample_grid"]) as grid:
        assert grid.format == "PNG" and min(grid.size) >= 64


def test_card_command_makes_the_shipped_step(card) -> None:
    """Run with the card's params, the command must stop at the shipped step, not the schedule's end."""
    steps = card["steps"]
    assert card["config"]["steps"] == steps or f"--steps {steps}" in card["command"], card["command"]


def test_an_imperfect_base_like_the_papers(card) -> None:
    assert 0.25 <= card["reviewer_available_rate"] <= 0.75
