"""What the API's functions share: writing a summary, and loading a judge or a generator the same way everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.generation.denoise import Denoiser
    from reliable_ad.judge import RFNetJudge


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def judge_from(params: Params, spec: str | Path) -> RFNetJudge:
    """A judge from an RFNet folder, or from the registry when given as name@alias (e.g. rfnet@champion)."""
    from reliable_ad.judge import RFNetJudge
    from reliable_ad.registry.models import download_model

    text = str(spec)
    registered = "@" in text and not Path(text).exists()
    return RFNetJudge.from_path(download_model(text, params.paths.experiment) if registered else text)


def judge_version(spec: str | Path) -> str:
    """What a judge is called in Label Studio's predictions: its registry name@alias, or its folder's hash."""
    from reliable_ad.data.hashing import folder_hash

    return f"rfnet-{folder_hash(Path(spec))[:12]}" if Path(spec).is_dir() else str(spec)


def controlnet_version(generator: Path, controlnet: Path | None) -> str:
    """The version of the ControlNet that generates (its folder's hash: weights and prompt pool): labels of its
    images carry it, so a method tuning another version refuses them."""
    from reliable_ad.data.hashing import folder_hash

    return f"controlnet-{folder_hash(controlnet or generator / 'controlnet')[:12]}"


def generates_the_same(controlnet: Path, other: Path) -> bool:
    """Whether two ControlNet folders hold the same config, weights and prompt pool (training records aside):
    then one generates exactly what the other does, and a comparison of the two needs one run."""
    from reliable_ad.data.hashing import folder_hash
    from reliable_ad.models.generator import TRAINING_RECORDS

    return folder_hash(controlnet, TRAINING_RECORDS) == folder_hash(other, TRAINING_RECORDS)


def denoiser_from(generator: Path, controlnet: Path | None, params: Params, for_evaluation: bool = True) -> Denoiser:
    """A slot denoiser of the generator (with another ControlNet if given), set up as recurrent generation runs."""
    from reliable_ad.generation.denoise import Denoiser

    cfg = params.generation.evaluate.recurrent if for_evaluation else params.generation.recurrent
    return Denoiser.from_folders(generator, controlnet, cfg)


def settings(params: Params) -> str:
    """Every setting in effect as YAML: the defaults with params.yaml (and its profile) laid over them."""
    import yaml

    values = params.model_dump(mode="json", by_alias=True, exclude={"profiles"})
    return str(yaml.safe_dump(values, sort_keys=False))
