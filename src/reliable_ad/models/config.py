"""Settings of the models (`rfnet.train.model`, `generation.pretrain.model`): plain pydantic, importable without
torch. An RFNet's config is saved with its weights; the tiny generator's sizes are what pre-training builds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reliable_ad.labels import RF1M_LABELS, LabelSet

IMAGE_MODALITIES = ("product", "generated", "depth", "saliency")


MODALITIES = (*IMAGE_MODALITIES, "caption")


CHANNELS = {"product": 4, "generated": 3, "depth": 1, "saliency": 1}


class RFNetConfig(BaseModel):
    """Architecture and inputs of an RFNet; saved with the weights and needed to judge."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=lambda: list(RF1M_LABELS.values()), description="label set, ordered")
    other_labels: Literal["error", "skip"] = Field(
        "error",
        description="rows labelled outside `labels` (e.g. unsuitable for a five-way model on RF1M's six classes): "
        "refuse them, or leave them out of training, evaluation and calibration (counted in train_summary.json)",
    )
    modalities: list[str] = Field(default_factory=lambda: list(MODALITIES), description="inputs used")
    image_size: int = Field(64, ge=16, description="side the images are resized to (the paper: 384)")
    width: int = Field(64, ge=16, description="token width")
    tiny_channels: list[int] = Field(default_factory=lambda: [16, 32, 64], description="tiny encoder conv widths")
    coordinates: bool = Field(False, description="tiny encoders see x/y coordinate channels (CoordConv)")
    grid: int = Field(4, ge=1, description="tokens per side of each image modality")
    fusion_layers: int = Field(3, ge=1, description="self-attention layers over all tokens (the paper: 3)")
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    image_encoder: str = Field("tiny", description="'tiny' or a transformers vision model path / hub id")
    text_encoder: str = Field("tiny", description="'tiny' or a transformers text model path / hub id")
    vocabulary: list[str] = Field(default_factory=list, description="caption words of the tiny text encoder")
    max_caption_tokens: int = Field(16, ge=2)
    mask_generated: bool = Field(
        True,
        description="give the generated-image encoder the product's alpha as a 4th channel, so it sees which "
        "pixels are the pasted product and which the model grew (needs the product modality)",
    )
    depth_extractor: str = Field(
        "ground", description="how depth maps are made, at training and judge time (ground, or dpt:<model>)"
    )
    saliency_extractor: str = Field("frequency_tuned", description="how saliency maps are made")
    acceptance_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="tau: accept an image when p(available) >= this; calibrated on held-out rows after training "
        "(`rad rfnet calibrate`); None: 0.5",
    )

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
        if not set(value) & {"product", "generated"}:
            raise ValueError("an RFNet needs the product or the generated image")
        if "caption" in value and "product" not in value:
            raise ValueError("the caption needs the product modality: the feature filter reads it through the product")
        return value

    @model_validator(mode="after")
    def _labels(self) -> RFNetConfig:
        LabelSet(tuple(self.labels))  # raises on unknown or duplicate names
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self

    @property
    def label_set(self) -> LabelSet:
        return LabelSet(tuple(self.labels))

    @property
    def masks_generated(self) -> bool:
        return self.mask_generated and "product" in self.modalities and "generated" in self.modalities

    def channels(self, modality: str) -> int:
        return CHANNELS[modality] + (1 if modality == "generated" and self.masks_generated else 0)

    @property
    def image_modalities(self) -> list[str]:
        return [m for m in IMAGE_MODALITIES if m in self.modalities]


class TinyGeneratorConfig(BaseModel):
    """Sizes of the tiny generator built from scratch for the embedded world."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(64, description="canvas size in pixels (a multiple of 8)")
    vae_channels: tuple[int, ...] = Field((16, 32, 32), description="AutoencoderKL block widths; 3 -> factor 4")
    latent_channels: int = Field(4, description="latent channels of the VAE")
    unet_channels: tuple[int, ...] = Field((32, 64, 64), description="UNet block widths")
    text_width: int = Field(64, description="hidden size of the tiny CLIP text encoder (= cross-attention dim)")
    text_layers: int = Field(2, description="transformer layers of the text encoder")
    max_prompt_tokens: int = Field(32, description="prompt length the tokenizer pads or truncates to")
