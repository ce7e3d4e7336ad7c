"""Contrastive training of the MLRM (paper section 2.2, eq. 1; section 3, eq. 8-9; appendix A).

AdamW, 10% linear warmup then linear decay, gradient clipping, bf16 autocast on CUDA, optional
gradient checkpointing, and DDP under torchrun (negatives gathered from every process).
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist

from embedding.backbones import load_tokenizer
from embedding.batching import Pair, PairSet, pair_batches, select_pairs
from embedding.checkpoint import load_model, load_training_state, read_meta, save_checkpoint
from embedding.config import RunConfig, TrainConfig, to_dict
from embedding.encoder import autocast_for
from embedding.inputs import NoteProcessor
from embedding.losses import contrastive_loss, micl_loss
from embedding.mlrm import MLRM, NoteEmbeddings
from i2i.core.device import pick_device
from i2i.core.errors import InputError
from i2i.core.io import read_table
from i2i.core.schemas import DEAD_LETTER, validate

log = logging.getLogger(__name__)

NOTE_COLUMNS = ["note_id", "title", "topics", "content", "image"]


@dataclass
class TrainResult:
    out_dir: str
    model_version: str
    steps: int
    train_pairs: int
    val_pairs: int
    dead_letters: dict[str, int]
    final_train_loss: float
    val_loss: float | None
    notes_per_second: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Joins the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def load_notes(path: str) -> dict[str, dict]:
    table = read_table(path)
    report = validate(table, "notes")
    if not report.ok:
        raise InputError(f"notes table {path}: {report}")
    return {row["note_id"]: row for row in table.select(NOTE_COLUMNS).to_pylist()}


def load_pairs(path: str, note_ids: set[str]) -> tuple[PairSet, PairSet]:
    table = read_table(path)
    report = validate(table, "pairs")
    if not report.ok:
        raise InputError(f"pairs table {path}: {report}")
    return select_pairs(table, note_ids, "train", path), select_pairs(table, note_ids, "val", path)


def lr_lambda(total_steps: int, warmup_ratio: float):
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to zero."""
    warmup = max(1, int(math.ceil(total_steps * warmup_ratio)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def make_optimizer(model: MLRM, train: TrainConfig) -> torch.optim.Optimizer:
    llm, new = model.trainable_groups()
    return torch.optim.AdamW(
        [{"params": llm, "lr": train.lr}, {"params": new, "lr": train.head_lr}],
        betas=tuple(train.betas), eps=train.eps, weight_decay=train.weight_decay)


def batch_loss(model: MLRM, out: NoteEmbeddings) -> torch.Tensor:
    """Eq. 1 on the note embedding, or eq. 9 (with eq. 8 for the visual side) for mICL variants."""
    if out.visual is not None:
        return micl_loss(out.visual, out.multimodal, model.tau, model.config.alpha)
    return contrastive_loss(out.multimodal, model.tau)


def notes_of(batch: list[Pair], notes: dict[str, dict]) -> list[dict]:
    """[q_1..q_B, t_1..t_B]: the layout the losses expect."""
    return [notes[q] for q, _ in batch] + [notes[t] for _, t in batch]


def validation_loss(model: MLRM, processor: NoteProcessor, pairs: list[Pair], notes: dict[str, dict],
                    train: TrainConfig, device: torch.device) -> float | None:
    """Mean loss over the first ``val_batches`` fixed batches of the val split (same batches every time)."""
    if len(pairs) < 2:
        return None
    losses = []
    model.eval()
    batches = pair_batches(pairs, train.batch_size, seed=12345)
    with torch.no_grad(), autocast_for(device, train.bf16):
        for _, batch in zip(range(train.val_batches), batches):
            out = model(processor.prepare(notes_of(batch, notes)).to(device))
            losses.append(float(batch_loss(model, out)))
    model.train()
    return float(np.mean(losses)) if losses else None


class BatchStream(torch.utils.data.IterableDataset):
    """Prepared training batches; with DataLoader workers, worker k takes every k-th batch."""

    def __init__(self, pairs: list[Pair], notes: dict[str, dict], processor: NoteProcessor, train: TrainConfig,
                 shard: tuple[int, int], skip: int):
        self.pairs, self.notes, self.processor, self.train = pairs, notes, processor, train
        self.shard, self.skip = shard, skip

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batches = pair_batches(self.pairs, self.train.batch_size, self.train.seed,
                               allow_partial=self.shard[1] == 1, shard=self.shard)
        for index, batch in enumerate(batches):
            if index < self.skip or index % workers != worker:
                continue
            yield self.processor.prepare(notes_of(batch, self.notes))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(run: RunConfig, notes_path: str, pairs_path: str, out_dir: str, device: str | None = None,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Trains ``run.train.steps`` steps in total (counting steps of a resumed checkpoint) and saves to ``out_dir``."""
    started = time.perf_counter()
    cfg = run.train
    torch_device = pick_device(device)
    ddp = init_distributed(torch_device)
    if ddp.world > 1 and torch_device.type == "cuda":
        torch_device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(torch_device)
    seed_everything(cfg.seed + ddp.rank)

    notes = load_notes(notes_path)
    train_set, val_set = load_pairs(pairs_path, set(notes))
    if len(train_set.pairs) < 2:
        raise InputError(f"pairs table {pairs_path} has {len(train_set.pairs)} usable train pairs; need at least 2")

    state = None
    if resume:
        meta = read_meta(out_dir)
        model, tokenizer, _ = load_model(out_dir)
        if to_dict(model.config) != to_dict(run.model):
            log.warning("resuming %s: its model config is used, the requested one differs", out_dir)
        run.model = model.config
        state = load_training_state(out_dir)
        log.info("resuming %s (%s) from step %s", out_dir, meta.get("model_version"), state and state["step"])
    else:
        tokenizer = load_tokenizer(run.model.llm)
        model = MLRM(run.model, len(tokenizer), pretrained=True)
    model.to(torch_device).train()
    processor = NoteProcessor(model.config, tokenizer)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.steps, cfg.warmup_ratio))
    step, history = 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state.get("history", []))
    wrapped = model
    if ddp.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch_device.index] if torch_device.type == "cuda" else None)

    stream = BatchStream(train_set.pairs, notes, processor, cfg, (ddp.rank, ddp.world), skip=step)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.num_workers,
                                         pin_memory=torch_device.type == "cuda")
    batches = iter(loader)
    bar = None
    if progress and ddp.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {model.config.variant}", unit="step")
    dead_table = pa.Table.from_pylist(train_set.dead_letters + val_set.dead_letters, schema=DEAD_LETTER)

    def save() -> str:
        meta = {"step": step, "variant": model.config.variant, "notes": notes_path, "pairs": pairs_path,
                "train_config": to_dict(cfg), "history": history[-200:],
                "dead_letters": dict(train_set.reasons) | {f"val: {k}": v for k, v in val_set.reasons.items()}}
        training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "step": step, "history": history}
        version = save_checkpoint(model, tokenizer, out_dir, meta, training_state,
                                  extra_tables={"dead_letter": dead_table} if dead_table.num_rows else None)
        return version

    notes_seen, compute_seconds, window_losses, last_loss = 0, 0.0, [], float("nan")
    val_loss, version = None, None
    while step < cfg.steps:
        batch = next(batches)
        tick = time.perf_counter()
        with autocast_for(torch_device, cfg.bf16):
            out = wrapped(batch.to(torch_device))
            loss = batch_loss(model, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        compute_seconds += time.perf_counter() - tick
        notes_seen += len(batch) * ddp.world
        step += 1
        last_loss = float(loss.detach())
        window_losses.append(last_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", tau=f"{float(model.tau.detach()):.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            record = {"step": step, "loss": float(np.mean(window_losses)), "tau": float(model.tau.detach()),
                      "lr": scheduler.get_last_lr()[0], "notes_per_s": notes_seen / max(compute_seconds, 1e-9)}
            window_losses = []
            if cfg.val_every and step % cfg.val_every == 0 and step != cfg.steps:
                record["val_loss"] = validation_loss(model, processor, val_set.pairs, notes, cfg, torch_device)
            history.append(record)
            if ddp.main:
                log.info("step %d loss %.4f%s", step, record["loss"],
                         f" val_loss {record['val_loss']:.4f}" if record.get("val_loss") is not None else "")
        if cfg.save_every and step % cfg.save_every == 0 and step != cfg.steps and ddp.main:
            save()
    if bar is not None:
        bar.close()
    val_loss = validation_loss(model, processor, val_set.pairs, notes, cfg, torch_device)
    if history:
        history[-1]["val_loss"] = val_loss
    if ddp.main:
        version = save()
    if ddp.world > 1:
        dist.barrier()
    return TrainResult(
        out_dir=str(Path(out_dir)), model_version=version or "", steps=step, train_pairs=len(train_set.pairs),
        val_pairs=len(val_set.pairs),
        dead_letters=dict(train_set.reasons) | {f"val: {k}": v for k, v in val_set.reasons.items()},
        final_train_loss=history[-1]["loss"] if history else last_loss, val_loss=val_loss,
        notes_per_second=notes_seen / max(compute_seconds, 1e-9), seconds=time.perf_counter() - started,
        history=history)
