"""RFNet: the multimodal judge of generated ad images (the paper's Reliable Feedback Network).

Inputs are the product image, the generated image, its depth and saliency maps and the product caption.
Each image modality becomes a grid of tokens from its own encoder; the *feature filter* lets the product's
tokens attend to the caption (the caption says what the product is and how big it is); self-attention layers
then fuse the tokens of all modalities, and a linear head classifies the CLS token over the label set.

Encoders are ``tiny`` (trained from scratch, the CPU default) or pretrained transformers models given by
local path or hub id. A saved RFNet is ``config.json`` + ``model.safetensors`` (+ the encoders' configs and
tokenizer files): loading builds the architecture from configs and reads tensors, it never unpickles.
"""

from __future__ import annotations

import json
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from reliable_ad.errors import InputError
from reliable_ad.labels import AVAILABLE
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.loading import LOADING

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"  # how and on which data the model was trained (lineage, not needed to load)
TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+")


# --------------------------------------------------------------------------------------------- encoders


class TinyImageEncoder(nn.Module):
    """Strided conv blocks (one per entry of `hidden`), a conv to the token width, pooled to grid x grid.

    With `coordinates`, two channels holding each pixel's x and y are added to the input (CoordConv): heights,
    gaps and positions are then easy to read off, which the size and floating judgements need.
    """

    def __init__(self, channels: int, hidden: list[int], width: int, grid: int, coordinates: bool = False) -> None:
        super().__init__()
        self.coordinates = coordinates
        widths = [channels + (2 if coordinates else 0), *hidden]
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(4, c_out), nn.SiLU()]
        layers += [nn.Conv2d(widths[-1], width, 3, padding=1), nn.GroupNorm(4, width), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coordinates:
            b, _, h, w = x.shape
            ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], dim=1)
        return self.pool(self.body(x)).flatten(2).transpose(1, 2)  # B x grid^2 x width


class PretrainedImageEncoder(nn.Module):
    """A transformers vision backbone (ResNet, ConvNeXt, CLIP vision...) pooled to grid tokens."""

    mean: torch.Tensor
    std: torch.Tensor
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, backbone: nn.Module, hidden: int, width: int, grid: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.grid = grid
        self.project = nn.Linear(hidden, width)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x[:, :3] if x.shape[1] >= 3 else x.repeat(1, 3, 1, 1)
        features = self.backbone(pixel_values=(rgb - self.mean) / self.std).last_hidden_state
        if features.dim() == 3:  # ViT-style tokens: drop CLS, back to a square map
            tokens = features[:, 1:]
            side = math.isqrt(tokens.shape[1])
            features = tokens[:, : side * side].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        pooled = F.adaptive_avg_pool2d(features, self.grid).flatten(2).transpose(1, 2)
        return self.project(pooled)


def caption_tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class TinyTextEncoder(nn.Module):
    """Words from a fixed vocabulary; numbers as a <num> token plus an embedding of their log value, so
    sizes never seen in training (an unseen product's 17 cm) still land between the ones that were."""

    def __init__(self, vocabulary: list[str], width: int, max_tokens: int, heads: int) -> None:
        super().__init__()
        self.words = {w: i + 2 for i, w in enumerate(vocabulary)}  # 0 pad, 1 unknown
        self.number_id = len(self.words) + 2
        self.max_tokens = max_tokens
        self.embed = nn.Embedding(self.number_id + 1, width, padding_idx=0)
        self.number = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width))
        self.position = nn.Parameter(torch.zeros(1, max_tokens, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(captions), self.max_tokens, dtype=torch.long)
        values = torch.zeros(len(captions), self.max_tokens, 1)
        for row, caption in enumerate(captions):
            for col, token in enumerate(caption_tokens(caption)[: self.max_tokens]):
                if token[0].isdigit():
                    ids[row, col] = self.number_id
                    values[row, col, 0] = math.log1p(float(token))
                else:
                    ids[row, col] = self.words.get(token, 1)
        return ids, values

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, values = self.tokenize(captions)
        ids, values = ids.to(self.position.device), values.to(self.position.device)
        is_number = (ids == self.number_id).unsqueeze(-1)
        x = self.embed(ids) + torch.where(is_number, self.number(values), 0.0) + self.position
        padding = ids == 0
        padding[:, 0] = False  # an empty caption still has one (padding) token to attend to
        return self.encoder(x, src_key_padding_mask=padding), padding


class PretrainedTextEncoder(nn.Module):
    """A transformers text model (RoBERTa, MiniLM...) with its tokenizer, projected to the token width."""

    def __init__(self, model: nn.Module, tokenizer: Any, hidden: int, width: int, max_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.project = nn.Linear(hidden, width)

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.project.weight.device)
        hidden = self.model(**batch).last_hidden_state
        return self.project(hidden), batch["attention_mask"] == 0


# --------------------------------------------------------------------------------------------- network


class RFNet(nn.Module):
    def __init__(self, config: RFNetConfig, encoders: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.config = config
        width, grid = config.width, config.grid
        self.encoders = nn.ModuleDict(encoders or _tiny_encoders(config))
        self.modality_embedding = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, width)) for m in config.image_modalities}
        )
        self.position = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.uses_caption = "caption" in config.modalities
        if self.uses_caption:
            self.feature_filter = nn.MultiheadAttention(width, config.heads, batch_first=True)
            self.filter_norm = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(
            width, config.heads, 4 * width, dropout=config.dropout, batch_first=True, norm_first=True
        )
        self.fusion = nn.TransformerEncoder(layer, config.fusion_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(config.labels))

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Logits over the label set. `inputs` maps each used modality to a B x C x H x W tensor in [0, 1]
        (the product as RGBA) and "caption" to a list of strings."""
        missing = [m for m in self.config.modalities if m not in inputs]
        if missing:
            raise InputError(f"RFNet input lacks the modalities {missing} that this model uses")
        tokens = []
        for modality in self.config.image_modalities:
            x = inputs[modality]
            if modality == "generated" and self.config.masks_generated:
                x = torch.cat([x, inputs["product"][:, 3:4]], dim=1)
            encoded = self.encoders[modality](x) + self.position + self.modality_embedding[modality]
            if modality == "product" and self.uses_caption:
                text, padding = self.encoders["caption"](list(inputs["caption"]))
                attended, _ = self.feature_filter(encoded, text, text, key_padding_mask=padding)
                encoded = self.filter_norm(encoded + attended)
            tokens.append(encoded)
        batch = tokens[0].shape[0]
        x = torch.cat([self.cls.expand(batch, -1, -1), *tokens], dim=1)
        return self.head(self.norm(self.fusion(x)[:, 0]))

    @property
    def available_index(self) -> int:
        return self.config.labels.index(AVAILABLE)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2) + "\n")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        for name, encoder in self.encoders.items():
            backbone = getattr(encoder, "backbone", None) or getattr(encoder, "model", None)
            if backbone is not None:  # keep the pretrained architecture's config (and tokenizer) beside it
                backbone.config.save_pretrained(folder / name)
                tokenizer = getattr(encoder, "tokenizer", None)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder / name)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> RFNet:
        """Rebuild from `folder/config.json` and read `model.safetensors`; no network, no pickle."""
        config_path = folder / CONFIG_FILE
        if not folder.exists():
            raise FileNotFoundError(
                f"RFNet folder {folder} does not exist: `rad rfnet train --out RUN` makes one (RUN/model)"
            )
        if not config_path.exists():
            run_model = folder / "model"  # a training run's folder given for its model
            hint = f": the model of this training run is {run_model}" if (run_model / CONFIG_FILE).exists() else ""
            raise FileNotFoundError(f"{folder}: not an RFNet folder (no {CONFIG_FILE}){hint}")
        config = RFNetConfig.model_validate(json.loads(config_path.read_text()))
        with LOADING:
            model = cls(config, _encoders_from_folder(config, folder))
            model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(device)))
        return model.to(device).eval()


def _tiny_encoders(config: RFNetConfig) -> dict[str, nn.Module]:
    encoders: dict[str, nn.Module] = {}
    for modality in config.image_modalities:
        if config.image_encoder == "tiny":
            encoders[modality] = TinyImageEncoder(
                config.channels(modality), config.tiny_channels, config.width, config.grid, config.coordinates
            )
        else:
            encoders[modality] = _pretrained_image(config.image_encoder, config, from_config=False)
    if "caption" in config.modalities:
        if config.text_encoder == "tiny":
            encoders["caption"] = TinyTextEncoder(
                config.vocabulary, config.width, config.max_caption_tokens, config.heads
            )
        else:
            encoders["caption"] = _pretrained_text(config.text_encoder, config, from_config=False)
    return encoders


def _encoders_from_folder(config: RFNetConfig, folder: Path) -> dict[str, nn.Module]:
    """Encoders built from configs saved beside the weights (weights come from model.safetensors)."""
    encoders = _tiny_encoders(config.model_copy(update={"image_encoder": "tiny", "text_encoder": "tiny"}))
    if config.image_encoder != "tiny":
        for modality in config.image_modalities:
            encoders[modality] = _pretrained_image(str(folder / modality), config, from_config=True)
    if config.text_encoder != "tiny" and "caption" in config.modalities:
        encoders["caption"] = _pretrained_text(str(folder / "caption"), config, from_config=True)
    return encoders


def _hidden_size(model_config: Any) -> int:
    for name in ("hidden_size", "projection_dim"):
        value = getattr(model_config, name, None)
        if isinstance(value, int):
            return value
    sizes = getattr(model_config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise InputError(f"cannot tell the feature width of {type(model_config).__name__}")


def _pretrained_image(source: str, config: RFNetConfig, from_config: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    with LOADING:
        if from_config:
            backbone = AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=True))
        else:
            backbone = AutoModel.from_pretrained(source)
    vision = getattr(backbone, "vision_model", None)
    if vision is not None:  # a full CLIP model: keep its vision tower
        backbone = vision
    return PretrainedImageEncoder(backbone, _hidden_size(backbone.config), config.width, config.grid)


def _pretrained_text(source: str, config: RFNetConfig, from_config: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    with LOADING:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=from_config)
        if from_config:
            model = AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=True))
        else:
            model = AutoModel.from_pretrained(source)
    return PretrainedTextEncoder(model, tokenizer, _hidden_size(model.config), config.width, config.max_caption_tokens)


def build_vocabulary(captions: list[str], limit: int = 2000) -> list[str]:
    """The most frequent caption words (numbers are not words: they get the <num> token)."""
    counts: dict[str, int] = {}
    for caption in captions:
        for token in caption_tokens(caption):
            if not token[0].isdigit():
                counts[token] = counts.get(token, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
