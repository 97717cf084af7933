"""`params.yaml`: every knob of the pipeline in one typed tree.

Each section is the config model of the module that uses it, so a typo or a wrong type fails with the field's
full path (``data.synth.n: Input should be a valid integer``) before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reliable_ad.data.config import CatalogConfig, ImportConfig, PrepareConfig, SynthConfig, ValidationConfig
from reliable_ad.errors import InputError
from reliable_ad.generation.config import (
    GenerateArgs,
    GenerationEvalConfig,
    MethodsConfig,
    PretrainConfig,
    RecurrentConfig,
    RFFTConfig,
    RoundsConfig,
    SimulatedFeedbackConfig,
)
from reliable_ad.generation.guard import GuardConfig
from reliable_ad.paths import Paths
from reliable_ad.registry.config import ControlNetGateConfig, GateConfig
from reliable_ad.review.config import ReviewConfig
from reliable_ad.training.config import RFNetTrainConfig


class DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    synth: SynthConfig = Field(default_factory=SynthConfig)
    import_: ImportConfig = Field(default_factory=ImportConfig, alias="import")
    validate_: ValidationConfig = Field(default_factory=ValidationConfig, alias="validate")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    generated: SimulatedFeedbackConfig = Field(default_factory=SimulatedFeedbackConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)


class RFNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: RFNetTrainConfig = Field(default_factory=RFNetTrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generate: GenerateArgs = Field(default_factory=GenerateArgs)
    prompts: Path = Field(Path("configs/prompts_embedded.json"), description="prompt pool of recurrent generation")
    recurrent: RecurrentConfig = Field(default_factory=RecurrentConfig)
    evaluate: GenerationEvalConfig = Field(default_factory=GenerationEvalConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    rfft: RFFTConfig = Field(default_factory=RFFTConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    gate: ControlNetGateConfig = Field(default_factory=ControlNetGateConfig)
    methods: MethodsConfig = Field(default_factory=MethodsConfig)


class OrchestrationConfig(BaseModel):
    """Where the Prefect flows run their stages. Off (the default), every stage runs in the flow's own process, as
    `dvc repro` runs them; on, `python flows/deploy.py` deploys the flows to the CPU work pool and the stages that
    need a GPU to the GPU pool, and the full pipeline sends those stages there (docs/gpu.md)."""

    model_config = ConfigDict(extra="forbid")

    pools: bool = Field(
        False, description="run RFFT and generation's evaluation on the GPU work pool (needs a Prefect server)"
    )
    cpu_pool: str = Field("cpu-pool", min_length=1, description="work pool of the flows and their data stages")
    gpu_pool: str = Field("gpu-pool", min_length=1, description="work pool of RFFT and generation's evaluation")
    worker_wait_s: float = Field(
        600.0, gt=0, description="a GPU stage that no worker takes within this long fails (its run is cancelled)"
    )
    workdir: Path | None = Field(
        None,
        description="the project folder as the workers see it, where they run the flows (docker/compose.yaml "
        "mounts it at /workspace); null: the folder `python flows/deploy.py` runs in",
    )


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = Field("full", description="name of an entry of `profiles` to lay over these params")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named overrides, e.g. `quick`: the same stages on tiny settings"
    )
    data: DataParams = Field(default_factory=DataParams)
    rfnet: RFNetParams = Field(default_factory=RFNetParams)
    generation: GenerationParams = Field(default_factory=GenerationParams)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    paths: Paths = Field(default_factory=Paths)


class ParamsError(InputError):
    """params.yaml is missing, not YAML, or has a field of the wrong name or type."""


def load_params(path: Path) -> Params:
    if not path.exists():
        raise ParamsError(f"{path}: no such params file")
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    profile = raw.get("profile", "full")
    profiles = raw.get("profiles") or {}
    if profile != "full":
        if profile not in profiles:
            raise ParamsError(f"{path}: profile {profile!r} is not one of {['full', *profiles]}")
        raw = _overlay(raw, profiles[profile])
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        raise ParamsError(f"{path}: invalid parameters\n  " + "\n  ".join(lines)) from error


def _overlay(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged
