"""Prompt selection from people's labels: the paper's prompt-engineering row, done by data.

Each arm is one prompt as rendered (an entry of the pool, or a colour-filled entry for ``flag: 1`` entries).
A labelled batch of the generator's images scores each arm by the share its images were available, with a
Beta posterior; the new pool draws each arm by its chance of being among the `top_k` best (Thompson draws
from those posteriors), mixed with a uniform share so that every arm keeps being tried and its labels keep
coming: a bandit that goes on exploring, not a frozen best prompt. Arms the batch never showed start at the
prior, like the others' uncertainty allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from reliable_ad.errors import InputError
from reliable_ad.generation.config import PromptSelectConfig
from reliable_ad.generation.prompts import COLOURS, PromptConfig


@dataclass(frozen=True)
class ArmScore:
    prompt: str
    shown: int
    available: int
    weight: float


def arms_of(pool: Sequence[PromptConfig]) -> list[PromptConfig]:
    """Every prompt the pool can render, as an entry of its own (colours filled in, flag 0)."""
    arms = []
    for entry in pool:
        fills = [entry.prompt.replace("{}", colour, 1) for colour in COLOURS] if entry.flag else [entry.prompt]
        arms += [entry.model_copy(update={"prompt": text, "flag": 0, "weight": None}) for text in fills]
    return arms


def select_prompts(
    pool: Sequence[PromptConfig], prompts: Sequence[str], available: Iterable[bool], cfg: PromptSelectConfig
) -> tuple[list[PromptConfig], list[ArmScore]]:
    """The weighted pool learnt from labelled images (`prompts[i]` made an image people found `available[i]`),
    and each arm's score. Labelled prompts the pool cannot render are refused: they came from another pool."""
    arms = arms_of(pool)
    index = {arm.prompt: i for i, arm in enumerate(arms)}
    unknown = sorted({p for p in prompts if p not in index})
    if unknown:
        raise InputError(
            f"{len(unknown)} labelled prompt(s) are not in the prompt pool, e.g. {unknown[0]!r}: the batch was "
            "generated with another pool"
        )
    shown, good = np.zeros(len(arms)), np.zeros(len(arms))
    for prompt, ok in zip(prompts, available, strict=True):
        shown[index[prompt]] += 1
        good[index[prompt]] += bool(ok)
    rng = np.random.default_rng(cfg.seed)
    draws = rng.beta(1 + good, 1 + shown - good, size=(cfg.draws, len(arms)))
    top = min(cfg.top_k, len(arms))
    in_top = np.zeros(len(arms))
    np.add.at(in_top, np.argpartition(-draws, top - 1, axis=1)[:, :top].ravel(), 1.0)
    weights = (1 - cfg.explore) * in_top / in_top.sum() + cfg.explore / len(arms)
    learnt = [arm.model_copy(update={"weight": round(float(w), 6)}) for arm, w in zip(arms, weights, strict=True)]
    table = [
        ArmScore(arm.prompt, int(n), int(k), float(w)) for arm, n, k, w in zip(arms, shown, good, weights, strict=True)
    ]
    return learnt, sorted(table, key=lambda row: -row.weight)
