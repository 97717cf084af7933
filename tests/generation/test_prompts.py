import json
from collections import Counter
from pathlib import Path

import pytest

from reliable_ad.generation.config import RecurrentConfig
from reliable_ad.generation.prompts import (
    POOL_FILE,
    PromptConfig,
    PromptPoolError,
    load_prompt_pool,
    pick_entry,
    pool_for,
    save_prompt_pool,
)
from reliable_ad.generation.recurrent import job_for

POOL = [PromptConfig(prompt="a"), PromptConfig(prompt="b"), PromptConfig(prompt="c")]


def test_an_unweighted_pool_is_taken_in_turn() -> None:
    assert [pick_entry(POOL, turn, seed=turn * 7).prompt for turn in range(5)] == ["a", "b", "c", "a", "b"]


def test_a_weighted_pool_is_drawn_by_weight_from_the_jobs_seed() -> None:
    pool = [entry.model_copy(update={"weight": w}) for entry, w in zip(POOL, (0.7, 0.3, 0.0), strict=True)]
    drawn = Counter(pick_entry(pool, 0, seed).prompt for seed in range(2000))
    assert drawn["c"] == 0 and 0.65 < drawn["a"] / 2000 < 0.75
    assert pick_entry(pool, 0, 123) == pick_entry(pool, 5, 123)  # the seed decides, not the turn


def test_jobs_of_a_weighted_pool_are_reproducible(tmp_path: Path) -> None:
    from reliable_ad.data.synth.products import held_out_products

    pool = [entry.model_copy(update={"weight": 1.0}) for entry in POOL]
    (product,) = held_out_products(1, 5)
    first = [job_for(product, 0, attempt, pool, RecurrentConfig()).prompt for attempt in range(1, 9)]
    assert first == [job_for(product, 0, attempt, pool, RecurrentConfig()).prompt for attempt in range(1, 9)]
    assert len(set(first)) > 1


@pytest.mark.parametrize(
    ("weights", "message"),
    [((1.0, None, 1.0), "entry 1, field 'weight': give every entry a weight, or none"), ((0.0, 0.0, 0.0), "sum to 0")],
)
def test_a_pool_with_some_weights_missing_or_none_positive_is_refused(tmp_path: Path, weights, message: str) -> None:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([{"prompt": p, "weight": w} for p, w in zip("abc", weights, strict=True)]))
    with pytest.raises(PromptPoolError, match=message):
        load_prompt_pool(path)


def test_a_controlnet_generates_with_its_own_pool_when_it_has_one(tmp_path: Path) -> None:
    default = tmp_path / "default.json"
    save_prompt_pool(POOL, default)
    controlnet = tmp_path / "controlnet"
    controlnet.mkdir()
    assert pool_for(controlnet, default) == POOL and pool_for(None, default) == POOL
    learnt = [entry.model_copy(update={"weight": 0.5}) for entry in POOL[:2]]
    save_prompt_pool(learnt, controlnet / POOL_FILE)
    assert pool_for(controlnet, default) == learnt
