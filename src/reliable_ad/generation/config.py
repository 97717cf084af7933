"""Settings of generation, recurrent generation and its evaluation: plain pydantic, cheap to import."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reliable_ad.data.config import WHITE_TOLERANCE, SynthConfig
from reliable_ad.models.config import TinyGeneratorConfig


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
    width: int | None = Field(None, ge=8, description="canvas width (None: the pipeline's native size)")
    height: int | None = Field(None, ge=8, description="canvas height (None: the pipeline's native size)")
    image_scale: float = Field(0.7, gt=0, le=1, description="used when the pool entry has none")
    num_inference_steps: int = Field(20, ge=1)
    iterations: int = Field(1, ge=1)
    low_threshold: int = 100
    high_threshold: int = 200
    keep_loc: bool = False
    white_tolerance: int = Field(
        WHITE_TOLERANCE, ge=0, le=254, description="how far below 255 an RGB product's white background may be"
    )
    seed: int | None = None
    sampler_name: str = "DDIM"
    save_path: Path = Path("results")
    data_path: Path = Path("examples")
    config: Path = Path("configs/prompts_embedded.json")
    allow_download: bool = Field(False, description="let from_pretrained reach the hub (off: paths must exist)")


EarlyBy = Literal["x0_judge", "probe", "both"]


class RecurrentConfig(BaseModel):
    """How recurrent generation runs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="slots generated together")
    max_attempts: int = Field(5, ge=1, description="attempts per product before it is abandoned")
    threshold: float | None = Field(
        None, ge=0, le=1, description="accept when the judge's p_available >= this (tau); None: the judge's own"
    )
    steps: int = Field(20, ge=1, description="DDIM steps")
    guidance_scale: float = Field(7.5, ge=1)
    controlnet_scale: float = Field(1.0, ge=0)
    early_reject: bool = Field(False, description="score slots at early_step and stop predicted failures")
    early_step: int = Field(10, ge=1, description="steps done when the early score is read")
    early_threshold: float = Field(0.2, ge=0, le=1, description="abort when the early score is below this")
    early_by: EarlyBy = Field(
        "x0_judge", description="early score: x0_judge (judge the x0 prediction), probe (activations), or both"
    )
    next_prompt_on_retry: bool = Field(True, description="a retry takes the next entry of the prompt pool")
    seed: int = 0


class SteeringConfig(BaseModel):
    """Particle steering: each product starts `particles` particles (the seeds of its first attempts); at each
    resample point they are scored and resampled to the next population size, duplicates branching with fresh
    noise; the judge decides at the end, and a product none of whose survivors it accepts starts another round
    while its UNet budget (max_attempts x steps, recurrent generation's) allows."""

    model_config = ConfigDict(extra="forbid")

    particles: int = Field(4, ge=1, description="particles a product starts each round")
    resample_at: list[float] = Field(
        default_factory=lambda: [0.1],
        description="where particles resample, as shares of the schedule (0.1 of 20 steps: after step 2)",
    )
    survivors: list[int] = Field(
        default_factory=lambda: [1], description="population after each resample point (one per point)"
    )
    score: EarlyBy = Field("probe", description="what particles are weighed by: probe, x0_judge or both")
    temperature: float = Field(
        0.0, ge=0, description="0: the best-scored survive; > 0: drawn with weights exp(logit(score) / temperature)"
    )

    @model_validator(mode="after")
    def _schedule(self) -> SteeringConfig:
        if len(self.survivors) != len(self.resample_at):
            raise ValueError(f"survivors {self.survivors} needs one population size per resample_at {self.resample_at}")
        if any(not 0 < f < 1 for f in self.resample_at):
            raise ValueError(f"resample_at {self.resample_at}: each share must lie strictly between 0 and 1")
        if any(n < 1 for n in self.survivors):
            raise ValueError(f"survivors {self.survivors}: every population needs at least one particle")
        return self

    def steps(self, schedule: int) -> list[int]:
        """The resample points as steps done of a `schedule`-step run (2 at the least: the probe reads the change
        since step 1)."""
        return [min(schedule - 1, max(2, round(f * schedule))) for f in self.resample_at]


class GenerationEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: int = Field(96, ge=1, description="held-out products evaluated")
    calibration_products: int = Field(48, ge=1, description="other products used to calibrate early rejection")
    product_seed: int = Field(777, description="RF1M-synth seed the held-out products come from")
    categories: list[str] | None = Field(None, description="product categories (default: all)")
    recurrent: RecurrentConfig = Field(default_factory=RecurrentConfig)
    probe_steps: list[int] = Field(default_factory=lambda: [2, 4, 6, 8, 10, 12], description="early-check candidates")
    probe_thresholds: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3, 0.4])
    max_false_abort: float = Field(0.05, ge=0, le=1, description="calibration budget of lost accepts")
    early_by: list[EarlyBy] = Field(
        default_factory=lambda: list(get_args(EarlyBy)),
        min_length=1,
        description="early scores calibrated; the cheapest within the false-abort budget runs",
    )
    probe_grid: int = Field(2, ge=1, description="cells per side each tapped block's activations are pooled to")
    probe_c: float = Field(0.001, gt=0, description="inverse L2 strength of the probe's logistic heads")
    probe_folds: int = Field(5, ge=2, description="folds of the out-of-fold scores thresholds are chosen on")
    steering: SteeringConfig = Field(default_factory=lambda: SteeringConfig())

    @model_validator(mode="after")
    def _steps_within_schedule(self) -> GenerationEvalConfig:
        """Steps set here must fit the schedule; the defaults shrink to fit a short one (steering needs 3 steps)."""
        steps = self.recurrent.steps
        outside = [v for v in self.probe_steps if not 0 < v < steps]
        if outside and "probe_steps" in self.model_fields_set:
            raise ValueError(
                f"probe_steps {outside} lie outside the {steps}-step schedule: each must be in 1..{steps - 1}"
            )
        self.probe_steps = [v for v in self.probe_steps if v not in outside]
        resample = self.steering.steps(steps)
        if "steering" in self.model_fields_set and (steps < 3 or any(b <= a for a, b in pairwise(resample))):
            raise ValueError(
                f"steering.resample_at {self.steering.resample_at} gives steps {resample} of a {steps}-step schedule: "
                "they must increase and lie in 2..steps-1"
            )
        return self

    @property
    def steers(self) -> bool:
        """Whether the schedule leaves steering a step to resample at (2..steps-1)."""
        return self.recurrent.steps >= 3


GENERATOR_CATEGORIES = ("bottle", "box", "jar", "lamp", "sneaker", "speaker", "mug", "toaster")
GENERATOR_MIX = {
    "available": 0.5,
    "space_mismatch": 0.125,
    "size_mismatch": 0.125,
    "indistinctiveness": 0.125,
    "shape_hallucination": 0.125,
}


class PretrainConfig(BaseModel):
    """How the tiny generator is pre-trained."""

    model_config = ConfigDict(extra="forbid")

    synth: SynthConfig = Field(
        default_factory=lambda: SynthConfig(
            seed=1000, class_mix=dict(GENERATOR_MIX), categories=list(GENERATOR_CATEGORIES), test_categories=[]
        ),
        description="the RF1M-synth world the scenes are rendered from",
    )
    model: TinyGeneratorConfig = Field(default_factory=lambda: TinyGeneratorConfig(unet_channels=(48, 96, 96)))
    vae_steps: int = Field(3000, ge=0, description="VAE reconstruction steps")
    vae_batch: int = Field(32, ge=1)
    vae_lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0, description="weight of the VAE's KL term")
    steps: int = Field(20000, ge=0, description="UNet + ControlNet + text encoder steps")
    batch: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup: int = Field(500, ge=0)
    prompt_dropout: float = Field(0.1, ge=0, le=1, description="share of empty prompts (for guidance)")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(500, ge=1)
    eval_every: int = Field(2000, ge=1, description="steps between reviewer checks of generated samples")
    eval_samples: int = Field(48, ge=1)
    eval_steps: int = Field(20, ge=1, description="DDIM steps when sampling for the check")
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch CPU threads")


class SelectionConfig(BaseModel):
    """Which RFFT snapshot is kept: chosen by verdicts that were not in the loss (never the training judge)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(25, ge=0, description="optimizer steps between snapshots of the ControlNet (0: keep the last)")
    by: Literal["reviewer", "judge", "last"] = Field(
        "reviewer",
        description="reviewer: human labels of validation products (the embedded world's reviewer); judge: "
        "another RFNet (other seed or data half) given as `judge`; last: no selection",
    )
    judge: Path | None = Field(None, description="RFNet folder of the selecting judge (by: judge)")
    products: int = Field(
        96,
        ge=1,
        description="validation products, neither training nor evaluation products (>= 96: a paired test "
        "on fewer rarely sees a gain of 10 points)",
    )
    product_seed: int = Field(5150, description="RF1M-synth seed of the validation products")


class RFFTConfig(BaseModel):
    """Reliable Feedback Fine-Tuning of the ControlNet (the paper's defaults in the comments)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1, description="images per micro-batch (the paper: 4 per GPU)")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step (the paper: 4)")
    lr: float = Field(3e-5, gt=0, description="AdamW learning rate (the paper: 1e-5)")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay of the ControlNet's weights")
    inference_steps: int = Field(20, ge=2, description="DDIM steps of the sampled trajectory (the paper: 40)")
    last_k: int = Field(10, ge=1, description="the gradient step is drawn among the last K (the paper: 10 of 40)")
    guidance_scale: float = Field(7.5, ge=1, description="classifier-free guidance of the sampled trajectory")
    feedback_weight: float = Field(1.0, ge=0, description="weight of the judge's feedback loss (0: the anchor alone)")
    reward: Literal["ce", "capped"] = Field(
        "ce", description="ce: the paper's -log p(available); capped: no gradient once p >= reward_cap"
    )
    reward_cap: float = Field(0.9, gt=0, le=1, description="p(available) above which `capped` stops pushing")
    reward_blur: float = Field(
        0.0,
        ge=0,
        description="Gaussian blur (sigma, pixels) of the images the reward judges (0: none): a pattern "
        "that only fools the judge pixel by pixel earns nothing",
    )
    ensemble: list[Path] = Field(
        default_factory=list, description="more RFNet folders (other seeds or data halves) judging beside the main one"
    )
    combine: Literal["mean", "min", "mean_minus_std"] = Field(
        "min", description="how the ensemble's log p(available) are combined (min, mean minus spread: conservative)"
    )
    regularizer: Literal["cc", "kl", "none"] = Field("cc", description="Consistent Condition, KL, or nothing")
    beta: float = Field(
        300.0,
        ge=0,
        description="weight of the regulariser (the paper: 1; here the Consistent Condition term is ~1e-3 beside a "
        "feedback loss of ~2, and only beta ~300 stopped the hacking: benchmarks/README.md)",
    )
    anchor: float = Field(0.0, ge=0, description="weight of the plain denoising loss (the anchor), 0: none")
    anchor_data: Literal["renders", "accepted"] = Field(
        "renders",
        description="what the anchor learns from: available renders (RF1M's available class), or the ControlNet's "
        "own first attempts that the reward accepts (the judge picks among real samples: RAFT)",
    )
    anchor_pool: int = Field(256, ge=1, description="training products sampled once per pool of accepted images")
    anchor_refresh: int = Field(
        0, ge=0, description="optimizer steps between new pools from the current ControlNet (0: one pool at the start)"
    )
    products: int = Field(512, ge=1, description="training products (RF1M-synth, seed below)")
    product_seed: int = Field(4242, description="RF1M-synth seed of the training products (not the evaluation's)")
    categories: list[str] | None = Field(None, description="product categories (default: the generator's)")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    select: SelectionConfig = Field(default_factory=SelectionConfig)
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (GPU)")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="autocast precision (GPU)")
    seed: int = Field(0, description="seeds torch and every step's draw of products, prompts and noise")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default)")

    @model_validator(mode="after")
    def _k_within_steps(self) -> RFFTConfig:
        if self.last_k > self.inference_steps:
            raise ValueError(f"last_k {self.last_k} is larger than inference_steps {self.inference_steps}")
        if self.feedback_weight == 0 and self.anchor == 0:
            raise ValueError("feedback_weight and anchor are both 0: nothing would train the ControlNet")
        if self.select.by == "judge" and self.select.judge is None:
            raise ValueError("select.by is 'judge' but no select.judge folder is given")
        if self.select.by != "last" and self.select.every == 0:
            raise ValueError(f"select.by is {self.select.by!r} but select.every is 0: there is nothing to choose from")
        return self

    def save(self, controlnet: Path) -> None:
        """Written into the tuned ControlNet's folder: the model, registered or copied, says how it was trained."""
        (controlnet / "rfft_config.json").write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def saved_in(cls, controlnet: Path) -> RFFTConfig | None:
        """The settings a ControlNet was fine-tuned with; None for one RFFT did not make."""
        path = controlnet / "rfft_config.json"
        return cls.model_validate_json(path.read_text()) if path.exists() else None


class SimulatedFeedbackConfig(BaseModel):
    """How much generated, reviewer-labelled data the embedded world adds (RF1M-gen). Images are denoised as
    the generation evaluation's recurrent runs denoise them (steps, guidance, batch size)."""

    model_config = ConfigDict(extra="forbid")

    products: int = Field(2000, ge=1, description="products generated once each")
    product_seed: int = Field(2000, description="RF1M-synth seed the products come from (own ids, own products)")
    seed: int = Field(0, description="seed of the generation jobs (noise and prompt draws)")
    images_per_product: int = Field(
        1, ge=1, description="images of each product, each with its own seed (2: pairs of one product for DPO)"
    )


class RoundsConfig(BaseModel):
    """Feedback rounds: the generator's newest images labelled by people, the judge retrained on them, the
    generator updated by `method` (by default KTO on the round's labels; RFFT under the new judge as the paper
    does). Round 0 is the pipeline's first judge and RFFT; these come after it."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=0, description="feedback rounds after the first RFFT (0: none)")
    products: int = Field(1000, ge=1, description="fresh training products generated and labelled per round")
    product_seed: int = Field(3000, description="RF1M-synth seed of round 1's products; round k uses seed + k - 1")
    rfnet_epochs: int = Field(3, ge=1, description="epochs of the judge's warm-started retraining on all data")
    rfnet_lr: float = Field(3e-4, gt=0, description="its learning rate (a warm judge is fine-tuned, not retrained)")
    unseen_products: int = Field(96, ge=0, description="products of another seed, first attempts only (0: skip)")
    unseen_product_seed: int = Field(8888, description="RF1M-synth seed of the unseen products")
    method: str = Field(
        "kto",
        description="how a round's labels reach the generator: learnt from the round's labelled images directly "
        "(prompts, sft, kto, dpo, or a composition like prompts+kto), or rfft (through the retrained judge). KTO: "
        "above the base by the reviewer on each of four seeds, +10.7 points on average (benchmarks/README.md); "
        "RFFT: +0.0",
    )

    @model_validator(mode="after")
    def _known_method(self) -> RoundsConfig:
        if self.method != "rfft":
            check_method(self.method)
        return self


LABEL_METHODS = ("prompts", "sft", "kto", "dpo")  # learn from a labelled batch; "rfft" learns from the judge


class PromptSelectConfig(BaseModel):
    """Prompt selection from labels: a Thompson-sampling bandit over the prompts the pool renders."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(
        16,
        ge=1,
        description="the pool's weight goes to the arms likely among the best k (8 of the embedded pool's 42 arms "
        "gave more available images but narrowed the backgrounds below the guard's 0.75 of the base's diversity)",
    )
    explore: float = Field(0.1, ge=0, le=1, description="share drawn uniformly over every arm (keeps exploring)")
    draws: int = Field(4000, ge=1, description="Thompson draws from the arms' Beta posteriors")
    seed: int = 0


class LabelTuneConfig(BaseModel):
    """Fine-tuning the ControlNet on a labelled batch directly: SFT on the accepted images, Diffusion-KTO on
    each image's label, Diffusion-DPO on same-product pairs. The reference is the ControlNet being tuned, frozen."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(400, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=2, description="images per step (DPO: pairs are half of it)")
    lr: float = Field(3e-5, gt=0, description="AdamW learning rate (Diffusion-KTO on SD1.5: 1e-7 at batch 2048)")
    warmup: int = Field(20, ge=0, description="steps of linear learning-rate warm-up")
    beta: float = Field(
        2000.0, gt=0, description="KTO/DPO: scale of the implicit reward (KTO on SD1.5: 5000); sweep per model"
    )
    desirable_share: float = Field(0.5, gt=0, lt=1, description="KTO: share of desirable images per batch (0.8)")
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of the weights that are saved (0: the last weights)")
    snapshot_every: int = Field(
        0,
        ge=0,
        description="steps between snapshots for the selection (0: none, the last weights are the one candidate; "
        "each snapshot costs its validation labels and widens the multiple comparison)",
    )
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default)")


class MethodsBatchConfig(SimulatedFeedbackConfig):
    """The labelled batch of `rad rfft compare`: products of their own seed, two images each (DPO's pairs)."""

    products: int = Field(500, ge=1, description="fresh products, each generated images_per_product times")
    product_seed: int = Field(2500, description="RF1M-synth seed of the products (not RF1M-gen's, nor the rounds')")
    images_per_product: int = Field(2, ge=1, description="images of each product, each with its own seed")


class MethodsConfig(BaseModel):
    """`rad rfft compare`: every method learns from one labelled batch, and the reviewer counts the result."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(
        default_factory=lambda: ["prompts", "sft", "kto", "dpo", "prompts+kto"],
        description="methods to compare, by name; 'a+b' composes (a learnt pool with b's weights)",
    )
    batch: MethodsBatchConfig = Field(
        default_factory=MethodsBatchConfig,
        description="the labelled batch every method learns from (the embedded world generates and labels it)",
    )
    prompts: PromptSelectConfig = Field(default_factory=PromptSelectConfig)
    tune: LabelTuneConfig = Field(default_factory=LabelTuneConfig)
    select: SelectionConfig = Field(
        default_factory=lambda: SelectionConfig(products=192),
        description="who judges the candidates (step 0, the snapshots) on validation products; `every` is unused "
        "here (tune.snapshot_every). 192 products: on 96, round 1's KTO (+5.2 points on validation) had an "
        "interval reaching -1.0 and was not kept",
    )

    @model_validator(mode="after")
    def _known_methods(self) -> MethodsConfig:
        for name in self.methods:
            check_method(name)
        return self


def check_method(name: str) -> list[str]:
    """The parts of a method name ('prompts+kto'), each one of the set; at most one weight update."""
    parts = name.split("+")
    unknown = [part for part in parts if part not in LABEL_METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r} in {name!r}: methods are {', '.join(LABEL_METHODS)}")
    if sum(part != "prompts" for part in parts) > 1:
        raise ValueError(f"{name!r} combines more than one weight update (sft, kto, dpo): choose one")
    return parts
