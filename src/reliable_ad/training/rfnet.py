"""Train RFNet on prepared shards, with accelerate (CPU processes, GPUs, mixed precision: the same code).

The default schedule is the paper's: AdamW, lr 1e-4 divided by 10 halfway, 10 epochs; the loss is
class-weighted cross-entropy (weights from the training split's label counts). Checkpoints are written every
``checkpoint_every`` steps and a restarted run resumes from the newest one. A non-finite loss stops training:
the model of the last good checkpoint is what the run leaves behind.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from reliable_ad.data.dataset import ShardDataset, ShardIndex, read_column
from reliable_ad.data.hashing import folder_hash, sha256_of
from reliable_ad.errors import InputError, UserError
from reliable_ad.models.rfnet import TRAINING_FILE, RFNet, build_vocabulary
from reliable_ad.training.checkpoint import fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint
from reliable_ad.training.config import RFNetTrainConfig
from reliable_ad.training.rfnet_eval import calibrate_rfnet, check_shards, model_inputs, shard_modalities


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


def _class_weights(index: dict[str, Any], labels: list[str]) -> torch.Tensor:
    counts = index["label_counts"]["train"]
    totals = torch.tensor([float(counts.get(name, 0)) for name in labels])
    present = totals > 0
    weights = torch.zeros_like(totals)
    weights[present] = totals[present].sum() / (present.sum() * totals[present])
    return weights


def rfnet_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | None,
    sources: list[str],
    source_weights: dict[str, float],
) -> torch.Tensor:
    """Cross-entropy weighted by class and by source, normalised by the total weight (as torch's weighted
    cross-entropy is), so the loss scale does not depend on the batch's mix."""
    if not source_weights:
        return F.cross_entropy(logits, labels, weight=class_weights)
    per_row = torch.tensor([source_weights.get(s, 1.0) for s in sources], device=logits.device)
    if class_weights is not None:
        per_row = per_row * class_weights[labels]
    return (F.cross_entropy(logits, labels, reduction="none") * per_row).sum() / per_row.sum()


def train_rfnet(
    cfg: RFNetTrainConfig, shards: Path, out: Path, init_from: Path | None = None, resume: bool = True
) -> dict[str, Any]:
    """Train into `out` (`out/model` is the result, `out/checkpoints` the resumable state).

    A resume continues only a run of the same settings, data and warm start (anything else is refused);
    `resume=False` deletes `out/checkpoints` first, so no earlier run's checkpoints mix with the new ones.
    """
    # pretrained backbones carry parts the judge never uses (a text model's pooler): DDP must not wait for them
    unused = DistributedDataParallelKwargs(
        find_unused_parameters=cfg.model.image_encoder != "tiny" or cfg.model.text_encoder != "tiny"
    )
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(), kwargs_handlers=[unused]
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    shard_index = ShardIndex(shards)
    index = shard_index.data
    model_cfg = cfg.model
    if init_from is not None:  # warm start: the champion's architecture and vocabulary
        model = RFNet.load(init_from)
        if model.config.labels != model_cfg.labels:
            raise InputError(f"warm start {init_from} has labels {model.config.labels}, config has {model_cfg.labels}")
        model.train()
    else:
        if model_cfg.text_encoder == "tiny" and not model_cfg.vocabulary:
            model_cfg = model_cfg.model_copy(
                update={"vocabulary": build_vocabulary(read_column(shards, "train", "title"))}
            )
        model = RFNet(model_cfg)
    model_cfg = model.config
    check_shards(index, model_cfg, shards)
    data_hash = sha256_of(shards / "index.json")
    init_hash = folder_hash(init_from) if init_from is not None else None
    run_fp = fingerprint(
        {
            **cfg.model_dump(mode="json", exclude={"workers", "threads"}),
            "model": model_cfg.model_dump(mode="json"),
            "data": data_hash,
            "init_from": init_hash,
        }
    )

    dataset = ShardDataset(
        shards,
        "train",
        model_cfg.label_set,
        modalities=shard_modalities(model),
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        unknown_labels=model_cfg.other_labels,
    )
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=dataset.collate)
    train_rows = shard_index.count("train", model_cfg.label_set)  # without the rows left out
    steps_per_epoch = max(1, train_rows // (cfg.batch_size * accelerator.num_processes))
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    drop_step = math.ceil(total_steps * cfg.lr_drop_at)

    def lr_factor(s: int) -> float:
        return 1.0 if s < drop_step else 0.1

    weights = _class_weights(index, model_cfg.labels) if cfg.class_weighted else None

    ckpt_dir = out / "checkpoints"
    if not resume and accelerator.is_main_process:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    step = 0
    latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        step = load_checkpoint(latest, {"rfnet": model}, optimizer, run_fp)["step"]
        accelerator.print(f"resumed from {latest} at step {step}")
    for group in optimizer.param_groups:  # the schedule is a function of the step alone
        group["lr"] = group["initial_lr"] = cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor, last_epoch=step - 1)
    model, optimizer = accelerator.prepare(model, optimizer)
    if weights is not None:
        weights = weights.to(accelerator.device)

    started = time.time()
    flips = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    last_good = latest
    losses: list[float] = []
    bar = tqdm(total=total_steps, initial=step, desc="rfnet", disable=not accelerator.is_main_process)
    model.train()
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        for batch in islice(_epoch_batches(loader, dataset, epoch, skip), steps_per_epoch - skip):
            inputs = model_inputs(batch, accelerator.unwrap_model(model), accelerator.device)
            if cfg.hflip and torch.rand((), generator=flips) < 0.5:
                inputs = {k: (v.flip(-1) if torch.is_tensor(v) else v) for k, v in inputs.items()}
            labels = batch["label"].to(accelerator.device)
            with accelerator.autocast():
                logits = model(inputs)
                loss = rfnet_loss(logits.float(), labels, weights, batch["source"], cfg.source_weights)
            # every process stops together: one rank raising alone would leave the others waiting in DDP
            if not accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all():
                _keep_last_good(accelerator, model, last_good, run_fp, out)
                raise NonFiniteLoss(
                    f"non-finite loss {loss.item()} at step {step}; {out / 'model'} holds the last good "
                    f"checkpoint ({last_good or 'none: no checkpoint was written yet'})"
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if step % cfg.checkpoint_every == 0 and accelerator.is_main_process:
                last_good = save_checkpoint(
                    ckpt_dir, {"rfnet": accelerator.unwrap_model(model)}, optimizer, step, run_fp
                )
        accelerator.wait_for_everyone()
    bar.close()
    summary = {
        "steps": step,
        "epochs": cfg.epochs,
        "train_rows": train_rows,
        "train_rows_left_out": index["rows"]["train"] - train_rows,
        "processes": accelerator.num_processes,
        "seconds": round(time.time() - started, 1),
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4) if losses else None,
    }
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save(out / "model")
        summary["calibration"] = _calibrate(out / "model", shards, index, cfg)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        record = {
            "config": cfg.model_dump(mode="json", exclude={"model"}),
            "shards": {"path": shards.as_posix(), "index_sha256": data_hash},
            "init_from": None if init_from is None else {"path": init_from.as_posix(), "sha256": init_hash},
            "summary": summary,
        }
        (out / "model" / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def _calibrate(model: Path, shards: Path, index: dict[str, Any], cfg: RFNetTrainConfig) -> dict[str, Any]:
    """The acceptance threshold from the val split; without usable val rows the judge keeps 0.5 and says why."""
    if not index["rows"].get("val"):
        return {"skipped": "no val split", "threshold": 0.5}
    try:
        return calibrate_rfnet(model, shards, "val", cfg.calibration_source, cfg.calibration_beta)
    except ValueError as error:
        print(f"tau not calibrated, the judge keeps 0.5: {error}")
        return {"skipped": str(error), "threshold": 0.5}


def _epoch_batches(loader: DataLoader[Any], dataset: ShardDataset, epoch: int, skip: int) -> Iterator[Any]:
    """The epoch's batches after the first `skip` (a resumed run), wrapping around when this process's share
    runs out, so that every process takes the same number of steps (DDP needs it)."""
    dataset.set_epoch(epoch)
    while True:
        empty = True
        for batch in loader:
            empty = False
            if skip > 0:
                skip -= 1
                continue
            yield batch
        if empty:
            raise UserError("the training split yields no batches for this process: the shards hold too few train rows")


def _keep_last_good(
    accelerator: Accelerator, model: torch.nn.Module, last_good: Path | None, run_fp: str, out: Path
) -> None:
    """Leave the weights of the last good checkpoint as the run's model."""
    if last_good is None or not accelerator.is_main_process:
        return
    network = accelerator.unwrap_model(model)
    load_checkpoint(last_good, {"rfnet": network}, None, run_fp)
    network.save(out / "model")
