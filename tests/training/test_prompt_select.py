import numpy as np
import pytest

from reliable_ad.errors import InputError
from reliable_ad.generation.config import PromptSelectConfig
from reliable_ad.generation.prompts import COLOURS, PromptConfig
from reliable_ad.training.prompt_select import arms_of, select_prompts

POOL = [
    PromptConfig(prompt="a product on a oak desktop, {} walls", flag=1),
    PromptConfig(prompt="a product on a white desktop, sky blue walls"),
]


def test_every_prompt_the_pool_renders_is_an_arm_of_its_own() -> None:
    arms = arms_of(POOL)
    assert len(arms) == len(COLOURS) + 1
    assert all(arm.flag == 0 and "{}" not in arm.prompt for arm in arms)
    assert arms[-1].prompt == POOL[1].prompt


def test_the_weight_goes_to_what_people_accepted_and_every_arm_keeps_being_tried() -> None:
    pool = [PromptConfig(prompt=text) for text in ("oak, beige walls", "white, sky blue walls", "marble, cream walls")]
    good, bad, middling = (entry.prompt for entry in pool)
    prompts = [good] * 20 + [bad] * 20 + [middling] * 20
    available = [True] * 18 + [False] * 2 + [False] * 18 + [True] * 2 + [True, False] * 10
    cfg = PromptSelectConfig(top_k=1, explore=0.1)
    learnt, table = select_prompts(pool, prompts, available, cfg)
    weights = {arm.prompt: arm.weight for arm in learnt}
    assert weights[good] == max(weights.values()) and weights[good] > 0.5
    assert min(weights.values()) >= cfg.explore / len(learnt) - 1e-6  # rejected every time: still tried
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-4)
    assert table[0].prompt == good and (table[0].shown, table[0].available) == (20, 18)
    # the same labels and seed give the same pool
    assert select_prompts(pool, prompts, available, cfg)[0] == learnt


def test_arms_the_batch_never_showed_are_explored_like_uncertain_ones() -> None:
    learnt, _ = select_prompts(POOL, [POOL[1].prompt] * 30, [False] * 30, PromptSelectConfig(top_k=4, explore=0.0))
    assert learnt[-1].weight is not None and learnt[-1].weight < min(arm.weight or 0 for arm in learnt[:-1])


def test_labels_of_prompts_the_pool_cannot_render_are_refused() -> None:
    with pytest.raises(InputError, match=r"not in the prompt pool.*another pool"):
        select_prompts(POOL, ["a product on a glass desktop"], np.array([True]), PromptSelectConfig())
