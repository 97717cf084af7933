"""The prompt pool of the official sampler: a JSON list of {prompt, negative_prompt, image_scale, matting, flag}.

``flag: 1`` fills a random colour into the prompt's ``{}``. Loading is strict: a malformed pool names the
file, the entry and the field.

A pool whose entries carry a ``weight`` (every entry, or none) is drawn from by weight instead of in turn: the
pool that prompt selection learns from people's labels. It is saved beside the ControlNet it was learnt for
(``prompt_pool.json`` in its folder), so it travels with that ControlNet through the registry; `pool_for`
finds it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reliable_ad.errors import InputError

COLOURS = (
    "white",
    "beige",
    "cream",
    "light grey",
    "grey",
    "sky blue",
    "sage green",
    "blush pink",
    "lavender",
    "terracotta",
    "charcoal",
    "mustard",
    "navy",
    "olive",
    "red",
    "blue",
    "green",
    "yellow",
    "pink",
    "orange",
)


class PromptPoolError(InputError):
    """A prompt pool that cannot be used: not JSON, empty, or an entry with a bad field."""


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    image_scale: float | None = Field(
        None, gt=0, le=1, description="product size as a share of the canvas (None: the sampler's --image_scale)"
    )
    matting: bool = False
    flag: int = Field(0, ge=0, le=1, description="1: fill a random colour into '{}' in the prompt")
    weight: float | None = Field(
        None, ge=0, description="chance of being drawn, relative to the other entries' (None: the pool is rotated)"
    )

    def render(self, rng: np.random.Generator) -> str:
        """The prompt text of one generation (the colour drawn from `rng` when flag is 1)."""
        if self.flag == 1:
            return self.prompt.replace("{}", COLOURS[int(rng.integers(len(COLOURS)))], 1)
        return self.prompt


POOL_FILE = "prompt_pool.json"  # a ControlNet folder's own pool, learnt with it


def load_prompt_pool(path: Path) -> list[PromptConfig]:
    if not path.is_file():
        raise PromptPoolError(f"{path}: prompt pool not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PromptPoolError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, list) or not raw:
        raise PromptPoolError(f"{path}: expected a non-empty JSON list of prompt entries")
    pool = []
    for index, entry in enumerate(raw):
        try:
            config = PromptConfig.model_validate(entry)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            raise PromptPoolError(f"{path}: entry {index}, field '{field}': {first['msg']}") from error
        if config.flag == 1 and "{}" not in config.prompt:
            raise PromptPoolError(f"{path}: entry {index}, field 'prompt': flag 1 needs a '{{}}' to fill")
        pool.append(config)
    weighted = [config.weight is not None for config in pool]
    if any(weighted) and not all(weighted):
        raise PromptPoolError(
            f"{path}: entry {weighted.index(not weighted[0])}, field 'weight': give every entry a weight, or none"
        )
    if all(weighted) and sum(config.weight or 0.0 for config in pool) <= 0:
        raise PromptPoolError(f"{path}: the weights sum to 0, so no entry can be drawn")
    return pool


def save_prompt_pool(pool: Sequence[PromptConfig], path: Path) -> None:
    path.write_text(json.dumps([entry.model_dump() for entry in pool], indent=2) + "\n")


def pool_for(controlnet: Path | None, default: Path) -> list[PromptConfig]:
    """The prompt pool a ControlNet generates with: its own (learnt with it), else the pipeline's `default`."""
    own = controlnet / POOL_FILE if controlnet is not None else None
    return load_prompt_pool(own if own is not None and own.is_file() else default)


def pick_entry(pool: Sequence[PromptConfig], turn: int, seed: int) -> PromptConfig:
    """The entry of one generation: drawn by weight from `seed` in a weighted pool, else the `turn`-th in turn."""
    if pool[0].weight is None:
        return pool[turn % len(pool)]
    weights = np.array([entry.weight for entry in pool], float)
    return pool[int(np.random.default_rng([seed, 1]).choice(len(pool), p=weights / weights.sum()))]
