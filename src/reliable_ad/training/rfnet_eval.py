"""Evaluate an RFNet on a split: the numbers (metrics JSON), the pictures (PNG) and DVC plot data.

Metrics: accuracy, per-class precision/recall/F1, macro-F1, AP of "available vs not" (the paper's AP),
the confusion matrix and the expected calibration error with its reliability diagram.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
)
from torch.utils.data import DataLoader
from tqdm import tqdm

from reliable_ad.data.dataset import ShardDataset, read_index
from reliable_ad.errors import InputError
from reliable_ad.labels import AVAILABLE
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import CONFIG_FILE, RFNet
from reliable_ad.stats import expected_calibration_error

SHARD_TO_INPUT = {"image": "generated", "product": "product", "depth": "depth", "saliency": "saliency"}


@dataclass
class Predictions:
    ids: list[str]
    product_ids: list[str]
    target: NDArray[np.int64]
    probabilities: NDArray[np.float32]  # N x classes
    labels: list[str]
    sources: list[str]  # the dataset folder of each row (rendered RF1M-synth, generated RF1M-gen, feedback...)

    @property
    def predicted(self) -> NDArray[np.int64]:
        return self.probabilities.argmax(axis=1)

    def subset(self, keep: NDArray[np.bool_]) -> Predictions:
        pick = np.flatnonzero(keep)
        return Predictions(
            [self.ids[i] for i in pick],
            [self.product_ids[i] for i in pick],
            self.target[pick],
            self.probabilities[pick],
            self.labels,
            [self.sources[i] for i in pick],
        )


def model_inputs(batch: dict[str, Any], model: RFNet, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Rename a shard batch's fields to RFNet's input names and move tensors to `device`."""
    inputs: dict[str, Any] = {"caption": list(batch["caption"])}
    for shard_name, input_name in SHARD_TO_INPUT.items():
        if input_name in model.config.modalities:
            inputs[input_name] = batch[shard_name].to(device)
    return inputs


def shard_modalities(model: RFNet) -> list[str]:
    return [s for s, i in SHARD_TO_INPUT.items() if i in model.config.modalities]


def check_shards(index: dict[str, Any], model: RFNetConfig, shards: Path) -> None:
    """Refuse shards a model cannot be trained or judged on faithfully: the judge makes depth and saliency maps
    with the model's extractors and resizes images to its image_size, so the shards must match both."""
    maps = index.get("maps", {})
    for kind, wanted in (("depth", model.depth_extractor), ("saliency", model.saliency_extractor)):
        if kind in model.modalities and maps.get(kind) != wanted:
            raise InputError(
                f"{shards}: the dataset's {kind} maps were made by {maps.get(kind)!r}, the model judges with "
                f"{wanted!r}; set rfnet.model.{kind}_extractor to match, or remake the maps"
            )
    if model.image_size != index["image_size"]:
        raise InputError(
            f"{shards}: the shards hold {index['image_size']} px images, the model's image_size is "
            f"{model.image_size}; set rfnet.train.model.image_size to {index['image_size']}, or prepare the shards "
            f"at {model.image_size} px (data.prepare.image_size)"
        )


@torch.no_grad()
def predict_split(model: RFNet, shards: Path, split: str, batch_size: int = 128) -> Predictions:
    model.eval()
    check_shards(read_index(shards), model.config, shards)
    dataset = ShardDataset(
        shards,
        split,
        model.config.label_set,
        modalities=shard_modalities(model),
        unknown_labels=model.config.other_labels,
    )
    ids, products, sources, targets, probs = [], [], [], [], []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc=f"predict {split}", leave=False):
        probs.append(model(model_inputs(batch, model)).softmax(-1).numpy())
        targets.append(batch["label"].numpy())
        ids += list(batch["id"])
        products += list(batch["product_id"])
        sources += list(batch["source"])
    labels = list(model.config.labels)
    return Predictions(ids, products, np.concatenate(targets), np.concatenate(probs), labels, sources)


def load_and_predict(
    model_dir: Path, shards: Path, split: str, batch_size: int, threads: int
) -> tuple[RFNet, Predictions]:
    """The saved RFNet and its predictions on `split`, `batch_size` rows at a time on `threads` torch threads
    (0: torch's default)."""
    if threads:
        torch.set_num_threads(threads)
    model = RFNet.load(model_dir)
    return model, predict_split(model, shards, split, batch_size)


def macro_f1(target: NDArray[np.int64], predicted: NDArray[np.int64], classes: int) -> float:
    """Mean F1 over the classes present in `target` (a source, or a bootstrap resample, may lack one): the one
    definition behind metrics/rfnet.json and the promotion gate."""
    _, _, f1, support = precision_recall_fscore_support(target, predicted, labels=range(classes), zero_division=0)
    return float(np.mean(f1[support > 0]))


def classification_metrics(p: Predictions) -> dict[str, Any]:
    """The metrics of all rows, plus the headline figures per source when rows come from several datasets
    (how well the judge does on generated images is what recurrent generation and RFFT rely on)."""
    metrics = _metrics(p)
    names = sorted(set(p.sources))
    if len(names) > 1:
        sources = np.array(p.sources)
        metrics["by_source"] = {
            name: {k: v for k, v in _metrics(p.subset(sources == name)).items() if k in HEADLINE} for name in names
        }
    return metrics


HEADLINE = ("n", "accuracy", "macro_f1", "ap_available", "ece")


def _metrics(p: Predictions) -> dict[str, Any]:
    classes = len(p.labels)
    predicted = p.predicted
    precision, recall, f1, support = precision_recall_fscore_support(
        p.target, predicted, labels=range(classes), zero_division=0
    )
    available = p.labels.index(AVAILABLE)
    is_available = p.target == available
    confidence = p.probabilities.max(axis=1)
    ece, reliability = expected_calibration_error(confidence, predicted == p.target)
    return {
        "n": len(p.target),
        "accuracy": float((predicted == p.target).mean()),
        "macro_f1": macro_f1(p.target, predicted, classes),
        "ap_available": float(average_precision_score(is_available, p.probabilities[:, available]))
        if is_available.any() and not is_available.all()
        else float("nan"),
        "ece": ece,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(p.labels)
        },
        "confusion": confusion_matrix(p.target, predicted, labels=range(classes)).tolist(),
        "reliability": reliability,
    }


def write_reports(
    p: Predictions, metrics: dict[str, Any], metrics_file: Path, plots_dir: Path, prefix: str = "rfnet"
) -> None:
    """metrics JSON (DVC metrics), plot data JSON (DVC plots) and PNG figures."""
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    headline = {k: metrics[k] for k in (*HEADLINE, "per_class", "by_source") if k in metrics}
    metrics_file.write_text(json.dumps(headline, indent=2) + "\n")
    pairs = [{"actual": p.labels[t], "predicted": p.labels[q]} for t, q in zip(p.target, p.predicted, strict=True)]
    (plots_dir / f"{prefix}_confusion.json").write_text(json.dumps(pairs) + "\n")
    available = p.labels.index(AVAILABLE)
    precision, recall, _ = precision_recall_curve(p.target == available, p.probabilities[:, available])
    curve = [{"recall": float(r), "precision": float(q)} for r, q in zip(recall, precision, strict=True)]
    (plots_dir / f"{prefix}_pr_available.json").write_text(json.dumps(curve) + "\n")
    (plots_dir / f"{prefix}_reliability.json").write_text(json.dumps(metrics["reliability"]) + "\n")
    _figures(p, metrics, curve, plots_dir, prefix)


def _figures(
    p: Predictions, metrics: dict[str, Any], curve: list[dict[str, float]], plots_dir: Path, prefix: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    matrix = np.array(metrics["confusion"], float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes[0].imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes[0].set_xticks(range(len(p.labels)), p.labels, rotation=45, ha="right")
    axes[0].set_yticks(range(len(p.labels)), p.labels)
    for (i, j), count in np.ndenumerate(matrix):
        axes[0].text(j, i, int(count), ha="center", va="center", color="black" if shares[i, j] < 0.6 else "white")
    axes[0].set(title=f"confusion (macro-F1 {metrics['macro_f1']:.3f})", xlabel="predicted", ylabel="actual")
    axes[1].plot([c["recall"] for c in curve], [c["precision"] for c in curve])
    axes[1].set(
        title=f"available vs not: AP {metrics['ap_available']:.3f}",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    bins = metrics["reliability"]
    axes[2].plot([0, 1], [0, 1], "--", color="grey")
    axes[2].bar([b["confidence"] for b in bins], [b["accuracy"] for b in bins], width=0.08, alpha=0.7)
    axes[2].set(
        title=f"reliability (ECE {metrics['ece']:.3f})",
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    fig.tight_layout()
    fig.savefig(plots_dir / f"{prefix}_evaluation.png", dpi=100)
    plt.close(fig)


def calibrate_threshold(p: Predictions, beta: float = 0.5) -> dict[str, float]:
    """tau maximising the F-beta of "available" against the rest on these rows (held-out ones: validation).

    beta < 1 weighs precision above recall: an accepted ad that is not usable costs more than a regeneration.
    """
    available = p.labels.index(AVAILABLE)
    truth = p.target == available
    if truth.all() or not truth.any():
        raise InputError(f"calibration needs available and other rows; got {int(truth.sum())} of {len(truth)}")
    precision, recall, thresholds = precision_recall_curve(truth, p.probabilities[:, available])
    score = (1 + beta**2) * precision * recall / np.maximum(beta**2 * precision + recall, 1e-12)
    best = int(np.argmax(score[:-1]))  # the curve's last point has no threshold
    return {
        "threshold": float(thresholds[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f_beta": float(score[best]),
        "beta": beta,
        "rows": len(truth),
    }


def calibrate_rfnet(
    model_dir: Path,
    shards: Path,
    split: str = "val",
    source: str | None = None,
    beta: float = 0.5,
    batch_size: int = 128,
    threads: int = 0,
) -> dict[str, Any]:
    """Set the model's acceptance threshold from `split`'s rows (of `source` only, if given) in its config.json.

    Calibrate on the images the judge will judge: in the embedded world the generated ones (rf1m-gen), whose
    p(available) runs lower than the renderings'.
    """
    model, predictions = load_and_predict(model_dir, shards, split, batch_size, threads)
    if source is not None:
        keep = np.array(predictions.sources) == source
        if not keep.any():
            found = sorted(set(predictions.sources))
            raise InputError(f"{shards}: split {split!r} has no rows of source {source!r} (sources: {found})")
        predictions = predictions.subset(keep)
    result: dict[str, Any] = {**calibrate_threshold(predictions, beta), "split": split, "source": source or "all"}
    config = model.config.model_copy(update={"acceptance_threshold": result["threshold"]})
    (model_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    return result


def evaluate_rfnet(
    model_dir: Path,
    shards: Path,
    metrics_file: Path,
    plots_dir: Path,
    split: str = "test",
    batch_size: int = 128,
    threads: int = 0,
) -> dict[str, Any]:
    _, predictions = load_and_predict(model_dir, shards, split, batch_size, threads)
    metrics = classification_metrics(predictions)
    write_reports(predictions, metrics, metrics_file, plots_dir)
    return metrics
