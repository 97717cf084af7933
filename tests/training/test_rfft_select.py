import json

import torch
from diffusers import ControlNetModel

from reliable_ad.data.synth.products import SynthProducts, held_out_products
from reliable_ad.generation.config import RecurrentConfig, RFFTConfig, SelectionConfig
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.judge import RFNetJudge
from reliable_ad.models.generator import load_components
from reliable_ad.training.rfft import JUDGES_FILE, rfft_train
from reliable_ad.training.rfft_select import SELECTION_FILE, chosen_row, select_snapshot

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
FIRST = RecurrentConfig(batch_size=4, steps=3, guidance_scale=2.0)
PRODUCTS = held_out_products(4, RFFTConfig().product_seed)


def _cfg(steps: int) -> RFFTConfig:
    return RFFTConfig(
        steps=steps, batch_size=2, inference_steps=4, last_k=2, products=4, lr=1e-3, threads=1,
        select=SelectionConfig(every=1),
    )  # fmt: skip


def test_a_snapshot_replaces_step_0_only_when_its_paired_interval_lies_above_0() -> None:
    def row(step: int, rate: float, low: float) -> dict[str, float]:
        return {"step": step, "selector_rate": rate, "delta_ci_low": low}

    # higher rates that may be noise (interval reaching 0 or below) keep step 0
    assert chosen_row([row(0, 0.4, 0.0), row(25, 0.5, -0.02), row(50, 0.45, 0.0)])["step"] == 0
    # among the candidates that are better, the highest rate wins, ties to the earliest
    table = [row(0, 0.4, 0.0), row(25, 0.5, 0.01), row(50, 0.6, 0.05), row(75, 0.6, 0.08), row(100, 0.7, -0.1)]
    assert chosen_row(table)["step"] == 50


def test_the_reviewer_scores_step_0_and_every_snapshot_paired_against_step_0(generator, tmp_path, make_judge):
    run = tmp_path / "run"
    rfft_train(_cfg(steps=2), generator, make_judge(), POOL, run, PRODUCTS)
    cfg = SelectionConfig(every=1, products=3)
    result = select_snapshot(run, generator, None, make_judge(), POOL, FIRST, cfg, SynthProducts(), progress=False)
    table = result["table"]
    assert [row["step"] for row in table] == [0, 1, 2]
    assert result["human_labels"] == 3 * 3  # every candidate's images were labelled: people's time, counted
    assert result["chosen_step"] == chosen_row(table)["step"]
    assert table[0]["delta_vs_step_0"] == 0.0
    for row in table[1:]:
        assert row["delta_vs_step_0"] == row["selector_rate"] - table[0]["selector_rate"]
        assert row["delta_ci_low"] <= row["delta_vs_step_0"] <= row["delta_ci_high"]
    assert all(row["gap"] == row["training_judge_rate"] - row["selector_rate"] for row in table)
    assert json.loads((run / SELECTION_FILE).read_text())["chosen_step"] == result["chosen_step"]
    kept = ControlNetModel.from_pretrained(run / "controlnet", use_safetensors=True)
    source = run / "snapshots" / f"step-{result['chosen_step']:06d}" if result["chosen_step"] else None
    expected = load_components(generator, source).controlnet
    assert all(torch.equal(a, b.to(a.dtype)) for a, b in zip(kept.parameters(), expected.parameters(), strict=True))
    # how the run trained stays with whichever weights were kept
    assert RFFTConfig.saved_in(run / "controlnet") is not None and (run / "controlnet" / JUDGES_FILE).exists()


def test_another_judge_can_choose_and_labels_no_human_image(generator, tmp_path, make_judge):
    run = tmp_path / "run"
    rfft_train(_cfg(steps=1), generator, make_judge(), POOL, run, PRODUCTS)
    make_judge(seed=7).model.save(tmp_path / "j2")
    cfg = SelectionConfig(every=1, by="judge", judge=tmp_path / "j2", products=2)
    selector = RFNetJudge.from_path(tmp_path / "j2")
    result = select_snapshot(
        run, generator, None, make_judge(), POOL, FIRST, cfg, SynthProducts(), progress=False, selector=selector
    )
    assert result["human_labels"] == 0 and result["by"].startswith("judge") and len(result["table"]) == 2
