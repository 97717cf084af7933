"""The generator's components: tiny ones built from config (CPU, CI) or real ones by hub id or local path.

Both worlds end up as the same objects: a diffusers inpainting UNet (9 input channels), a ControlNet that
takes the 4-channel latents, an AutoencoderKL, a CLIP text encoder with its tokenizer and a scheduler. A tiny
generator is saved and loaded in diffusers' own folder layout, so the stock pipeline loads it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionControlNetInpaintPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from reliable_ad.data.synth.catalog import PRODUCT_COLOURS, TABLE_COLOURS, WALL_COLOURS
from reliable_ad.errors import InputError
from reliable_ad.models.config import TinyGeneratorConfig
from reliable_ad.models.loading import LOADING

# files a training writes into a ControlNet folder beside the weights: how it was trained, not what it generates
TRAINING_RECORDS = ("rfft_*.json", "label_tune.json")
SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
PROMPT_WORDS = [
    "front",
    "view",
    "of",
    "a",
    "product",
    "placed",
    "on",
    "desktop",
    "table",
    "walls",
    "wall",
    "soft",
    "light",
    "commercial",
    "photography",
    "striped",
    "minimalist",
    "bright",
    "indoor",
    "scene",
    "the",
    "an",
    "with",
    "and",
    "in",
    "background",
    "photo",
    "studio",
    "white",
    "grey",
]


@dataclass
class GeneratorComponents:
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    controlnet: ControlNetModel
    text_encoder: CLIPTextModel
    tokenizer: PreTrainedTokenizerFast
    scheduler: SchedulerMixin

    def pipeline(self) -> StableDiffusionControlNetInpaintPipeline:
        return StableDiffusionControlNetInpaintPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            controlnet=self.controlnet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def tiny_vocabulary() -> list[str]:
    words: set[str] = set(PROMPT_WORDS)
    for name in (*PRODUCT_COLOURS, *WALL_COLOURS, *TABLE_COLOURS):
        words.update(name.split())
    return [*SPECIAL_TOKENS.values(), ",", ".", *sorted(words)]


def build_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the embedded world's prompt vocabulary; unknown words map to <unk>."""
    vocab = {word: i for i, word in enumerate(tiny_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    bos, eos = SPECIAL_TOKENS["bos"], SPECIAL_TOKENS["eos"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        model_max_length=max_length,
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
        bos_token=bos,
        eos_token=eos,
    )


def controlnet_for_inpainting(unet: UNet2DConditionModel, conditioning_channels: int = 3) -> ControlNetModel:
    """A ControlNet initialised from an inpainting UNet.

    ``ControlNetModel.from_unet`` would copy the UNet's 9 input channels, but the inpainting pipeline feeds the
    ControlNet the 4 latent channels only: the copy takes the UNet's weights for those 4 channels.
    """
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    # one stride-2 step per UNet level after the first: the control image reaches the latents' size
    cond_channels = (*[16, 32, 96, 256][: levels - 1], cfg.block_out_channels[-1])
    controlnet = ControlNetModel(
        in_channels=4,
        conditioning_channels=conditioning_channels,
        down_block_types=cfg.down_block_types,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        use_linear_projection=cfg.use_linear_projection,
        conditioning_embedding_out_channels=cond_channels,
    )
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("conv_in.")}
    missing, _ = controlnet.load_state_dict(state, strict=False)
    assert all(not k.startswith(("down_blocks", "mid_block", "time_")) for k in missing), missing
    with torch.no_grad():
        controlnet.conv_in.weight.copy_(unet.conv_in.weight[:, :4])
        controlnet.conv_in.bias.copy_(unet.conv_in.bias)
    return controlnet


def check_controlnet_matches(unet: UNet2DConditionModel, controlnet: ControlNetModel) -> None:
    """Refuse a ControlNet whose residuals cannot be added to this UNet's blocks."""
    u, c = unet.config, controlnet.config
    problems = []
    if tuple(u.block_out_channels) != tuple(c.block_out_channels):
        problems.append(f"block_out_channels {tuple(c.block_out_channels)} != UNet's {tuple(u.block_out_channels)}")
    if u.layers_per_block != c.layers_per_block:
        problems.append(f"layers_per_block {c.layers_per_block} != UNet's {u.layers_per_block}")
    if u.cross_attention_dim != c.cross_attention_dim:
        problems.append(f"cross_attention_dim {c.cross_attention_dim} != UNet's {u.cross_attention_dim}")
    if c.in_channels != 4:
        problems.append(f"ControlNet takes {c.in_channels} input channels; the inpainting pipeline feeds it 4")
    if problems:
        raise InputError("ControlNet does not match the UNet: " + "; ".join(problems))


def build_tiny_components(cfg: TinyGeneratorConfig | None = None, seed: int = 0) -> GeneratorComponents:
    """Fresh, randomly initialised tiny components (deterministic by seed)."""
    cfg = cfg or TinyGeneratorConfig()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(cfg.max_prompt_tokens)
    levels = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=cfg.vae_channels,
        latent_channels=cfg.latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=cfg.image_size,
    )
    latent_size = cfg.image_size // 2 ** (levels - 1)
    unet_levels = len(cfg.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=2 * cfg.latent_channels + 1,
        out_channels=cfg.latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (unet_levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (unet_levels - 1) + ("UpBlock2D",),
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_width,
            intermediate_size=2 * cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=4,
            max_position_embeddings=cfg.max_prompt_tokens,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    controlnet = controlnet_for_inpainting(unet)
    scheduler = sd15_scheduler()
    return GeneratorComponents(vae, unet, controlnet, text_encoder, tokenizer, scheduler)


def sd15_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.5's noise schedule, as its published scheduler config sets it."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def save_components(components: GeneratorComponents, out: Path) -> None:
    """Save as a diffusers pipeline folder with the ControlNet in `out/controlnet` (safetensors)."""
    components.pipeline().save_pretrained(out, safe_serialization=True)


def load_components(
    base: str | Path, controlnet: str | Path | None = None, local_only: bool = True, dtype: torch.dtype = torch.float32
) -> GeneratorComponents:
    """Load a pipeline folder or hub id (SD1.5-style), with its ControlNet from `controlnet` or `base/controlnet`.

    `local_only` (the default) forbids any download: a missing path is a clear error, never a hub request.
    Weights are cast to `dtype` (float32 by default; the tiny generator ships in float16 to stay small).
    """
    base_path = Path(base)
    if local_only and not base_path.exists():
        raise FileNotFoundError(f"generator model path {base} does not exist (offline: no hub download)")
    cn_source = Path(controlnet) if controlnet is not None else base_path / "controlnet"
    if local_only and not Path(cn_source).exists():
        raise FileNotFoundError(f"ControlNet path {cn_source} does not exist (offline: no hub download)")
    with LOADING:
        cn = ControlNetModel.from_pretrained(cn_source, local_files_only=local_only, use_safetensors=True, dtype=dtype)
        pipe = StableDiffusionControlNetInpaintPipeline.from_pretrained(
            base,
            controlnet=cn,
            safety_checker=None,
            local_files_only=local_only,
            use_safetensors=True,
            dtype=dtype,
        )
    check_controlnet_matches(pipe.unet, pipe.controlnet)
    return GeneratorComponents(pipe.vae, pipe.unet, pipe.controlnet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)


def model_card(path: Path, fields: dict[str, object]) -> None:
    """Write the facts of how a model was made next to it, as JSON (read back by `rad` and tests)."""
    path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
