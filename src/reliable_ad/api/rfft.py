"""RFFT: fine-tune the ControlNet with the judge's feedback, compare it with the base, register it behind its gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reliable_ad.api.common import (
    denoiser_from,
    generates_the_same,
    judge_from,
    product_source,
    rfft_products,
    rfft_renders,
    write_json,
)
from reliable_ad.params import Params

if TYPE_CHECKING:
    from collections.abc import Mapping

    from reliable_ad.generation.recurrent import RunStats
    from reliable_ad.judge import Reward


def _comparison_key(params: Params, generator: Path, controlnet: Path, judge: str | Path) -> str | None:
    """The key of a base-vs-tuned comparison; None when the judge is a registry alias (it can move)."""
    from reliable_ad.generation.rfft_eval import comparison_key

    if not Path(judge).is_dir():
        return None
    p = params.generation
    products = product_source(params).version()
    return comparison_key(
        generator, controlnet, Path(judge), p.evaluate, p.guard, p.gate.resamples, p.gate.confidence, products
    )


def compare_generators(
    params: Params,
    generator: Path,
    controlnet: Path,
    judge: str | Path,
    metrics: Path | None,
    grid: Path | None,
    base: Path | None = None,
    known: Mapping[str, RunStats] | None = None,
) -> dict[str, Any]:
    """The tuned `controlnet` against `base` (default: the generator's own ControlNet) on the same products and
    seeds: available rates by the judge and the reviewer with paired intervals, the hacking gap, the guard. Each
    side generates with its ControlNet's own prompt pool when it has one (learnt from labels), else the params'.
    `known`: sides generated before (`generation.rfft_eval.evaluation_run`); a tuned side with the base's
    weights and pool reuses the base's run."""
    from reliable_ad.generation.prompts import pool_for
    from reliable_ad.generation.rfft_eval import compare_generators as run

    p = params.generation
    same = generates_the_same(controlnet, base or generator / "controlnet")
    return run(
        denoiser_from(generator, base, params),
        denoiser_from(generator, controlnet, params),
        judge_from(params, judge),
        pool_for(base, p.prompts),
        p.evaluate,
        p.guard,
        product_source(params),
        metrics,
        grid,
        resamples=p.gate.resamples,
        confidence=p.gate.confidence,
        key=None if base is not None else _comparison_key(params, generator, controlnet, judge),
        tuned_pool=pool_for(controlnet, p.prompts),
        known=known,
        tuned_is_base=same,
    )


def reward_from(params: Params, judge: str | Path) -> Reward:
    """RFFT's reward: the judge, or with `generation.rfft.ensemble` judges beside it, their conservative ensemble."""
    from reliable_ad.judge import JudgeEnsemble

    cfg = params.generation.rfft
    main = judge_from(params, judge)
    if not cfg.ensemble:
        return main
    return JudgeEnsemble([main, *(judge_from(params, other) for other in cfg.ensemble)], cfg.combine)


def rfft_train(
    params: Params,
    generator: Path,
    judge: str | Path,
    out: Path,
    resume: bool = True,
    controlnet: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `controlnet` (default: the generator's own) into `out/controlnet`, then keep the snapshot that
    the selection's verdicts (never the training judge's) like best; the summary holds both."""
    from accelerate import PartialState

    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.training.rfft import rfft_train as run
    from reliable_ad.training.rfft_select import select_snapshot

    p = params.generation
    pool = load_prompt_pool(p.prompts)
    products, renders = rfft_products(params), rfft_renders(params)
    summary = run(p.rfft, generator, reward_from(params, judge), pool, out, products, renders, controlnet, resume)
    processes = PartialState()  # under `accelerate launch` one process chooses, the others wait
    if processes.is_main_process:
        select = p.rfft.select
        selector = judge_from(params, select.judge) if select.by == "judge" and select.judge is not None else None
        training_judge = judge_from(params, judge)
        selection = select_snapshot(
            out, generator, controlnet, training_judge, pool, p.evaluate.recurrent, select, product_source(params),
            progress, selector,
        )  # fmt: skip
        summary["selection"] = {k: v for k, v in selection.items() if k != "table"}
        write_json(out / "rfft_summary.json", summary)
    processes.wait_for_everyone()
    return summary


def register_controlnet(
    params: Params,
    controlnet: Path,
    generator: Path,
    judge: str | Path,
    decision: Path | None,
    comparison: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register and gate a tuned ControlNet. The gate is handed its comparison with the champion (with none, with
    the base ControlNet): `comparison`, `rad rfft evaluate`'s metrics file, when it compared the same generator,
    ControlNet and judge under the same settings, else one made here. A gate judge RFFT tuned against is refused
    before anything is generated."""
    from reliable_ad.registry.controlnet import REGISTERED_NAME, refuse_trained_judge
    from reliable_ad.registry.controlnet import register_controlnet as run
    from reliable_ad.registry.models import champion
    from reliable_ad.training.rfft import trained_against

    gate = params.generation.gate
    refuse_trained_judge(gate, judge, trained_against(controlnet))
    current = champion(REGISTERED_NAME, params.paths.experiment)
    earlier = json.loads(comparison.read_text()) if comparison is not None and comparison.exists() else None
    key = _comparison_key(params, generator, controlnet, judge)
    if current is None and key is not None and earlier is not None and earlier.get("comparison_key") == key:
        metrics, how = earlier, "reused from the evaluation of the same key"
    else:
        base = current.folder if current else None
        metrics = compare_generators(params, generator, controlnet, judge, None, None, base=base)
        how = "generated here"
    result = run(
        controlnet,
        generator,
        str(judge),
        metrics,
        how,
        current.version if current else None,
        gate,
        params.paths.experiment,
        decision_file=decision,
        extra_tags=extra_tags,
    )
    return dict(result.__dict__)
