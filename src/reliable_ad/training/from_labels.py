"""Learn from people's labels directly: the ControlNet fine-tuned on a labelled batch of its own images.

No reward model stands between the labels and the weights, so there is no judge to fool:

- ``sft``: the denoising loss on the images people accepted (rejection-sampling fine-tuning with the human's
  filter), the baseline every method must beat;
- ``kto``: Diffusion-KTO (arXiv 2404.04465). Each image's implicit reward is how much better than the frozen
  reference the tuned ControlNet denoises it, ``r = beta * (e_ref - e)``; desirable images are pushed to
  ``r > z`` and undesirable ones to ``r < z`` through ``1 - sigmoid``, with ``z`` the batch's mean reward
  (detached, at least 0) standing in for the KL to the reference;
- ``dpo``: Diffusion-DPO on pairs of one product (an available image and one that is not), the same noise
  and timestep for both: ``-log sigmoid(-beta * ((e_w - e_ref_w) - (e_l - e_ref_l)))``.

Every defect label counts as undesirable. The run's last weights (and a snapshot every `snapshot_every` steps,
if set) are candidates; whether one replaces the start is decided outside the loss
(`rfft_select.select_snapshot`, a paired test against step 0 on validation products).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from numpy.typing import NDArray
from tqdm import tqdm

from reliable_ad.errors import InputError
from reliable_ad.generation.config import LabelTuneConfig
from reliable_ad.models.generator import GeneratorComponents, load_components
from reliable_ad.training.pretrain_generator import Conditioned, Example, condition, predict_noise
from reliable_ad.training.rfft import SNAPSHOTS

CONFIG_FILE = "label_tune.json"  # how a ControlNet was tuned on labels, kept in its folder


class LabelBatchError(InputError):
    """A labelled batch that cannot train the method asked for (no desirable images, no pairs...)."""


@dataclass(frozen=True)
class LabelledBatch:
    """Generated images with people's verdicts: what the generator made (image, product, prompt) and whether
    people found it available."""

    examples: list[Example]
    available: NDArray[np.bool_]
    product_ids: list[str]
    source: str  # where the labels came from, for messages

    def counts(self) -> str:
        good = int(self.available.sum())
        return f"{good} desirable (available) and {len(self.available) - good} undesirable"


def read_labelled_batch(folder: Path, version: str | None = None) -> LabelledBatch:
    """A folder in the RF1M layout (a feedback batch or dataset: label.txt, metadata.jsonl, images, products,
    plain or in packages) as a labelled batch. Rows whose metadata names the `generator` that made them must
    name `version` (the ControlNet being tuned): labels of another generator's images are refused."""
    import tempfile

    import pyarrow.parquet as pq

    from reliable_ad.data import layout
    from reliable_ad.data.config import ImportConfig
    from reliable_ad.data.imageio import decode, to_rgb, to_rgba
    from reliable_ad.data.rf1m import import_dataset
    from reliable_ad.data.sources import location_of, read_rows

    if not (folder / layout.LABEL_FILE).is_file():
        raise LabelBatchError(f"{folder}: no {layout.LABEL_FILE}; a labelled batch is a folder in the RF1M layout")
    with tempfile.TemporaryDirectory() as scratch:  # the user's folder is read, never written
        summary = import_dataset(folder, ImportConfig(), Path(scratch) / layout.MANIFEST_FILE)
        rows = pq.read_table(summary.manifest).to_pylist()
    if version is not None:  # after the import, which names any malformed metadata line
        _check_version(folder, version)
    files = [{kind: loc for kind in ("image", "product") if (loc := location_of(row, kind))} for row in rows]
    examples: list[Example | None] = [None] * len(rows)
    for position, data in read_rows(folder, files):
        if isinstance(data, Exception):
            raise LabelBatchError(f"{folder}: row {rows[position]['id']}: {data}") from data
        where = f"{folder}: row {rows[position]['id']}"
        examples[position] = Example(
            to_rgb(decode(data["image"], f"{where} image")),
            to_rgba(decode(data["product"], f"{where} product")),
            str(rows[position]["prompt"]),
        )
    return LabelledBatch(
        [e for e in examples if e is not None],
        np.array([row["label"] == "available" for row in rows]),
        [str(row["product_id"]) for row in rows],
        str(folder),
    )


def _check_version(folder: Path, version: str) -> None:
    from reliable_ad.data import layout

    for number, line in enumerate((folder / layout.METADATA_FILE).read_text().splitlines(), 1):
        made_by = json.loads(line).get("generator") if line.strip() else None
        if made_by is not None and made_by != version:
            raise LabelBatchError(
                f"{folder / layout.METADATA_FILE}, line {number}: the image was made by generator {made_by}, and the "
                f"ControlNet being tuned is {version}: label images of the generator being tuned"
            )


def same_product_pairs(batch: LabelledBatch) -> list[tuple[int, int]]:
    """(available row, rejected row) pairs of one product: every available image with every rejected one."""
    rows: dict[str, list[int]] = {}
    for i, product in enumerate(batch.product_ids):
        rows.setdefault(product, []).append(i)
    pairs = []
    for members in rows.values():
        good = [i for i in members if batch.available[i]]
        bad = [i for i in members if not batch.available[i]]
        pairs += [(w, lose) for w in good for lose in bad]
    return pairs


def check_batch(batch: LabelledBatch, method: str) -> None:
    """Refuse a batch the method cannot learn from, naming what it holds."""
    good = int(batch.available.sum())
    bad = len(batch.available) - good
    if method == "sft" and good == 0:
        raise LabelBatchError(f"{batch.source}: SFT needs accepted images, and the batch has {batch.counts()}")
    if method == "kto" and (good == 0 or bad == 0):
        raise LabelBatchError(
            f"{batch.source}: KTO needs desirable and undesirable images, and the batch has {batch.counts()}"
        )
    if method == "dpo" and not same_product_pairs(batch):
        raise LabelBatchError(
            f"{batch.source}: DPO needs products with an available and a rejected image, and none of the "
            f"{len(set(batch.product_ids))} products holds both ({batch.counts()}; label two or more images "
            "per product)"
        )


def tune_on_labels(
    cfg: LabelTuneConfig,
    method: str,
    generator: Path,
    batch: LabelledBatch,
    out: Path,
    controlnet: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `controlnet` (default: the generator's own) on `batch` by `method` (sft, kto or dpo) into
    `out/controlnet`, with snapshots under `out/snapshots` and the loss log in `out/train_log.jsonl`. A run
    starts over: what an earlier one left in `out` is removed."""
    check_batch(batch, method)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    for stale in ("controlnet", SNAPSHOTS):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    components = load_components(generator, controlnet)
    for module in (components.unet, components.vae, components.text_encoder, components.controlnet):
        module.requires_grad_(False).eval().to(device)
    reference = copy.deepcopy(components.controlnet)
    tuned = components.controlnet.requires_grad_(True).train()
    kept = copy.deepcopy(tuned).requires_grad_(False) if cfg.ema else tuned
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = DDPMScheduler.from_config(components.scheduler.config)
    good, bad = np.flatnonzero(batch.available), np.flatnonzero(~batch.available)
    pairs = same_product_pairs(batch) if method == "dpo" else []
    log = (out / "train_log.jsonl").open("w")
    started = time.time()
    for step in tqdm(range(cfg.steps), desc=method, unit="step", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        loss, record = _loss(method, cfg, components, tuned, reference, scheduler, batch, good, bad, pairs, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        optimizer.step()
        if cfg.ema:
            with torch.no_grad():
                for average, weight in zip(kept.parameters(), tuned.parameters(), strict=True):
                    average.lerp_(weight, 1 - cfg.ema)
        log.write(json.dumps({"step": step + 1, "loss": loss.item(), **record}) + "\n")
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
            kept.save_pretrained(out / SNAPSHOTS / f"step-{step + 1:06d}", safe_serialization=True)
    log.close()
    kept.save_pretrained(out / "controlnet", safe_serialization=True)
    (out / "controlnet" / CONFIG_FILE).write_text(
        json.dumps({"method": method, **cfg.model_dump(mode="json"), "labels": batch.source}, indent=2) + "\n"
    )
    return {
        "method": method,
        "steps": cfg.steps,
        "train_seconds": round(time.time() - started, 1),
        "rows": len(batch.available),
        "desirable": int(batch.available.sum()),
        "pairs": len(pairs),
    }


def _errors(
    components: GeneratorComponents,
    controlnet: torch.nn.Module,
    scheduler: DDPMScheduler,
    inputs: Conditioned,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """Each row's denoising error (mean squared, per image)."""
    prediction = predict_noise(components, controlnet, scheduler, inputs, noise, timesteps)
    return ((prediction - noise) ** 2).mean(dim=(1, 2, 3))


def _loss(
    method: str,
    cfg: LabelTuneConfig,
    components: GeneratorComponents,
    tuned: torch.nn.Module,
    reference: torch.nn.Module,
    scheduler: DDPMScheduler,
    batch: LabelledBatch,
    good: NDArray[np.int64],
    bad: NDArray[np.int64],
    pairs: list[tuple[int, int]],
    rng: np.random.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss and what to log of it."""
    if method == "sft":
        rows = rng.choice(good, cfg.batch_size)
    elif method == "kto":
        desirable = round(cfg.batch_size * cfg.desirable_share)
        rows = np.concatenate([rng.choice(good, desirable), rng.choice(bad, cfg.batch_size - desirable)])
    else:
        chosen = [pairs[int(k)] for k in rng.choice(len(pairs), cfg.batch_size // 2)]
        rows = np.array([w for w, _ in chosen] + [lose for _, lose in chosen])
    examples = [batch.examples[int(i)] for i in rows]
    with torch.no_grad():
        inputs = condition(components, examples, [e.prompt for e in examples])
    steps = scheduler.config.num_train_timesteps
    if method == "dpo":  # both images of a pair see the same noise and timestep
        half = len(rows) // 2
        noise = torch.randn_like(inputs.latents[:half]).repeat(2, 1, 1, 1)
        timesteps = torch.randint(0, steps, (half,)).repeat(2).to(noise.device)
    else:
        noise = torch.randn_like(inputs.latents)
        timesteps = torch.randint(0, steps, (len(rows),)).to(noise.device)
    error = _errors(components, tuned, scheduler, inputs, noise, timesteps)
    if method == "sft":
        return error.mean(), {}
    with torch.no_grad():
        error_ref = _errors(components, reference, scheduler, inputs, noise, timesteps)
    if method == "kto":
        reward = cfg.beta * (error_ref - error)
        sign = torch.tensor([1.0] * desirable + [-1.0] * (len(rows) - desirable), device=reward.device)
        baseline = reward.detach().mean().clamp(min=0)
        loss = (1 - torch.sigmoid(sign * (reward - baseline))).mean()
        shown = reward.detach()
        return loss, {"reward_desirable": shown[:desirable].mean().item(), "reward_undesirable": shown[
            desirable:].mean().item()}  # fmt: skip
    half = len(rows) // 2
    margin = (error[:half] - error_ref[:half]) - (error[half:] - error_ref[half:])
    loss = -F.logsigmoid(-cfg.beta * margin).mean()
    return loss, {"pair_accuracy": (margin.detach() < 0).float().mean().item()}
