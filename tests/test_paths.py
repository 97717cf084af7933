from pathlib import Path

from reliable_ad.paths import Paths


def test_every_location_is_relative_to_the_project_root() -> None:
    """A checkout anywhere, or the flows run in another folder, reads and writes under its own root."""
    locations = [v for v in Paths().model_dump().values() if isinstance(v, Path)]
    assert len(locations) > 30 and not [p for p in locations if p.is_absolute()]


def test_the_model_folders_are_inside_their_run_folders() -> None:
    paths = Paths(rfnet=Path("runs/judge"), rfft=Path("runs/tuned"))
    assert paths.rfnet_model == Path("runs/judge/model") and paths.rfft_controlnet == Path("runs/tuned/controlnet")
