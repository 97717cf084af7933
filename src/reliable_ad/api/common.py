"""What the API's functions share: writing a summary, loading a judge or a generator the same way everywhere,
and the products they generate for (RF1M-synth's, or the team's catalog: `data.catalog`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.params import Params

if TYPE_CHECKING:
    from reliable_ad.data.products import Product, ProductSource
    from reliable_ad.generation.denoise import Denoiser
    from reliable_ad.judge import RFNetJudge
    from reliable_ad.training.rfft import Renders


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


_catalogs: dict[str, ProductSource] = {}


def product_source(params: Params) -> ProductSource:
    """Where the products come from: the catalog `data.catalog.path` (opened and checked once per process and
    folder state), else RF1M-synth by seed."""
    from reliable_ad.data.synth.products import SynthProducts

    cfg = params.data.catalog
    if cfg.path is None:
        return SynthProducts(params.data.synth)
    from reliable_ad.data.catalog import CatalogProducts
    from reliable_ad.data.hashing import folder_hash

    key = f"{cfg.model_dump_json()}:{folder_hash(cfg.path) if cfg.path.is_dir() else ''}"
    if key not in _catalogs:
        _catalogs[key] = CatalogProducts.open(cfg)
    return _catalogs[key]


def rfft_products(params: Params) -> list[Product]:
    """RFFT's training products: `generation.rfft.categories`, by default (RF1M-synth) the tiny generator's."""
    from reliable_ad.data.synth.products import SynthProducts
    from reliable_ad.generation.config import GENERATOR_CATEGORIES

    cfg, source = params.generation.rfft, product_source(params)
    default = list(GENERATOR_CATEGORIES) if isinstance(source, SynthProducts) else None
    return source.products(cfg.products, cfg.product_seed, "train", cfg.categories or default)


def rfft_renders(params: Params) -> Renders | None:
    """The RFFT anchor's finished pictures (RF1M-synth's available renders of the training categories); None for
    a catalog, which has only cut-outs."""
    if params.data.catalog.path is not None:
        return None
    from reliable_ad.data.config import SynthConfig
    from reliable_ad.data.synth.world import draw_sample
    from reliable_ad.generation.config import GENERATOR_CATEGORIES
    from reliable_ad.training.pretrain_generator import examples_of

    cfg = params.generation.rfft
    world = SynthConfig(
        seed=cfg.product_seed + 1,
        class_mix={"available": 1.0},
        test_categories=[],
        categories=cfg.categories or list(GENERATOR_CATEGORIES),
    )
    return lambda picks: examples_of([draw_sample(world, k) for k in picks])


def settings(params: Params) -> str:
    """Every setting in effect as YAML: the defaults with params.yaml (and its profile) laid over them."""
    import yaml

    values = params.model_dump(mode="json", by_alias=True, exclude={"profiles"})
    return str(yaml.safe_dump(values, sort_keys=False))
