"""The paper's modality ablation on our data: train and evaluate RFNet without each input, and on the
generated image alone, under the same schedule; one JSON and one markdown table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reliable_ad.errors import InputError
from reliable_ad.models.config import MODALITIES
from reliable_ad.training.config import RFNetTrainConfig
from reliable_ad.training.rfnet import train_rfnet
from reliable_ad.training.rfnet_eval import evaluate_rfnet

# AP (available vs not) reported in the paper's Table 3, for the table's last column
PAPER_AP = {
    "all": 87.58,
    "without product": 81.17,
    "without generated": 82.06,
    "without depth": 85.31,
    "without saliency": 83.91,
    "without caption": 84.53,
}


def variants() -> dict[str, list[str]]:
    """Modalities of each row; without the product the caption goes too (the feature filter reads the caption
    through the product's tokens)."""
    table = {"all": list(MODALITIES)}
    for modality in MODALITIES:
        dropped = {modality, "caption"} if modality == "product" else {modality}
        table[f"without {modality}"] = [m for m in MODALITIES if m not in dropped]
    table["generated only"] = ["generated"]
    return table


def ablate(
    cfg: RFNetTrainConfig,
    shards: Path,
    out: Path,
    metrics_file: Path,
    table_file: Path,
    only: Sequence[str] = (),
    fresh: bool = False,
) -> dict[str, Any]:
    """Train one RFNet per variant (all of them, or those named in `only`) into `out/<variant>` and evaluate each
    on the test split. An interrupted ablation resumes each variant's run unless `fresh`. With `only`, the named
    rows of an existing `metrics_file` are replaced and the others kept, so rows can be run one at a time."""
    table = variants()
    unknown = [name for name in only if name not in table]
    if unknown:
        raise InputError(f"unknown ablation variants {unknown}; known: {list(table)}")
    earlier = json.loads(metrics_file.read_text()) if only and metrics_file.exists() else {}
    results: dict[str, Any] = {}
    for name, modalities in table.items():
        if only and name not in only:
            if name in earlier:
                results[name] = earlier[name]
            continue
        run = out / name.replace(" ", "_")
        variant = cfg.model_copy(update={"model": cfg.model.model_copy(update={"modalities": modalities})})
        train_rfnet(variant, shards, run, resume=not fresh)
        metrics = evaluate_rfnet(run / "model", shards, run / "metrics.json", run / "plots")
        results[name] = {k: metrics[k] for k in ("macro_f1", "accuracy", "ap_available", "ece")}
        results[name]["modalities"] = modalities
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(results, indent=2) + "\n")
    table_file.parent.mkdir(parents=True, exist_ok=True)
    table_file.write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| variant | macro-F1 | accuracy | AP (available) | paper AP |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        paper = f"{PAPER_AP[name]:.2f}" if name in PAPER_AP else "-"
        lines.append(
            f"| {name} | {r['macro_f1']:.3f} | {r['accuracy']:.3f} | {100 * r['ap_available']:.2f} | {paper} |"
        )
    return "\n".join(lines) + "\n"
