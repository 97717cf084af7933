"""Settings of generation, recurrent generation and its evaluation: plain pydantic, cheap to import."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class GenerateArgs(BaseModel):
    """The official sample.py's arguments (same names), plus the embedded world's defaults."""

    model_config = ConfigDict(extra="forbid")

    base_model_path: str = Field("models/tiny-generator/model", description="SD1.5 pipeline folder or hub id")
    controlnet_model_path: str | None = Field(None, description="ControlNet folder (default: base/controlnet)")
    lora_model_path: str | None = None
    lora_scale: float = 0.8
    batch_size: int = Field(8, ge=1)
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    eta: float = 0.0
    controlnet_conditioning_scale: float = 1.0
    width: int = Field(64, ge=8)
    height: int = Field(64, ge=8)
    image_scale: float = Field(0.7, gt=0, le=1, description="used when the pool entry has none")
    num_inference_steps: int = Field(20, ge=1)
    iterations: int = Field(1, ge=1)
    low_threshold: int = 100
    high_threshold: int = 200
    keep_loc: bool = False
    seed: int | None = None
    sampler_name: str = "DDIM"
    save_path: Path = Path("results")
    data_path: Path = Path("examples")
    config: Path = Path("configs/prompts_embedded.json")
    allow_download: bool = Field(False, description="let from_pretrained reach the hub (off: paths must exist)")


class RecurrentConfig(BaseModel):
    """How recurrent generation runs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="slots generated together")
    max_attempts: int = Field(5, ge=1, description="attempts per product before it is abandoned")
    threshold: float = Field(0.5, ge=0, le=1, description="accept when the judge's p_available >= this (tau)")
    steps: int = Field(20, ge=1, description="DDIM steps")
    guidance_scale: float = Field(7.5, ge=1)
    controlnet_scale: float = Field(1.0, ge=0)
    early_reject: bool = Field(False, description="judge the x0 prediction at early_step and stop predicted failures")
    early_step: int = Field(10, ge=1, description="steps done when the x0 prediction is judged")
    early_threshold: float = Field(0.2, ge=0, le=1, description="abort when p_available of x0 is below this")
    next_prompt_on_retry: bool = Field(True, description="a retry takes the next entry of the prompt pool")
    seed: int = 0


class GenerationEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: int = Field(96, ge=1, description="held-out products evaluated")
    calibration_products: int = Field(48, ge=1, description="other products used to calibrate early rejection")
    product_seed: int = Field(777, description="RF1M-synth seed the held-out products come from")
    categories: list[str] | None = Field(None, description="product categories (default: all)")
    recurrent: RecurrentConfig = Field(default_factory=RecurrentConfig)
    probe_steps: list[int] = Field(default_factory=lambda: [4, 6, 8, 10, 12], description="early-check candidates")
    probe_thresholds: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3, 0.4])
    max_false_abort: float = Field(0.05, ge=0, le=1, description="calibration budget of lost accepts")
