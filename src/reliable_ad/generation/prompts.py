"""The prompt pool of the official sampler: a JSON list of {prompt, negative_prompt, image_scale, matting, flag}.

``flag: 1`` fills a random colour into the prompt's ``{}``. Loading is strict: a malformed pool names the
file, the entry and the field.
"""

from __future__ import annotations

import json
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

    def render(self, rng: np.random.Generator) -> str:
        """The prompt text of one generation (the colour drawn from `rng` when flag is 1)."""
        if self.flag == 1:
            return self.prompt.replace("{}", COLOURS[int(rng.integers(len(COLOURS)))], 1)
        return self.prompt


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
    return pool
