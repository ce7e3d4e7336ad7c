"""Contrastive training of the MLRM (paper section 2.2, eq. 1; section 3, eq. 8-9; appendix A).

AdamW, 10% linear warmup then linear decay, gradient clipping, bf16 autocast on CUDA, optional
gradient checkpointing, and DDP under torchrun (negatives gathered from every process).
"""
from __future__ import annotations

import dataclasses
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
from embedding.batching import Pair, PairSet, one_epoch, pair_batches, select_pairs
from embedding.checkpoint import load_model, load_training_state, read_meta, save_checkpoint
from embedding.config import RunConfig, TrainConfig, to_dict
from embedding.diagnostics import Diagnostics, plot_curves, write_log
from embedding.encoder import autocast_for
from embedding.features import FeatureCache, prepare_batch
from embedding.inputs import NoteProcessor
from embedding.losses import contrastive_loss, micl_loss
from embedding.mlrm import MLRM, NoteEmbeddings
from i2i.core.device import pick_device
from i2i.core.errors import InputError
from i2i.core.io import read_table
from i2i.core.schemas import DEAD_LETTER, validate

log = logging.getLogger(__name__)

NOTE_COLUMNS = ["note_id", "title", "topics", "content", "image"]
LOG_FILE = "train_log.jsonl"
CURVES_FILE = "training_curves.png"


def merge_records(history: list[dict[str, Any]], diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step: the training window's loss and that step's diagnostics."""
    by_step: dict[int, dict[str, Any]] = {}
    for record in history + diagnostics:
        by_step.setdefault(int(record["step"]), {}).update(record)
    return [by_step[s] for s in sorted(by_step)]


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
    """AdamW with the LLM and the new modules at their own rates, each split into decayed and
    undecayed parameters, and the temperature alone: at the head rate it could not leave its
    initial value within a CPU-sized run."""
    llm, new = model.trainable_groups()
    exempt = model.no_decay()
    tau_lr = train.tau_lr if train.tau_lr is not None else train.head_lr
    groups = []
    for name, params, lr in (("llm", llm, train.lr), ("new", new, train.head_lr)):
        params = [p for p in params if p is not model.tau]
        groups.append({"name": name, "params": [p for p in params if id(p) not in exempt], "lr": lr})
        groups.append({"name": f"{name}_no_decay", "params": [p for p in params if id(p) in exempt], "lr": lr,
                       "weight_decay": 0.0})
    if model.tau.requires_grad:
        groups.append({"name": "tau", "params": [model.tau], "lr": tau_lr, "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=tuple(train.betas), eps=train.eps,
                             weight_decay=train.weight_decay)


def batch_loss(model: MLRM, out: NoteEmbeddings) -> torch.Tensor:
    """Eq. 1 on the note embedding, or eq. 9 (with eq. 8 for the visual side) for mICL variants."""
    if out.visual is not None:
        return micl_loss(out.visual, out.multimodal, model.tau, model.config.alpha)
    return contrastive_loss(out.multimodal, model.tau)


def notes_of(batch: list[Pair], notes: dict[str, dict]) -> list[dict]:
    """[q_1..q_B, t_1..t_B]: the layout the losses expect."""
    return [notes[q] for q, _ in batch] + [notes[t] for _, t in batch]


def validation_loss(model: MLRM, processor: NoteProcessor, pairs: list[Pair], notes: dict[str, dict],
                    train: TrainConfig, device: torch.device, cache: FeatureCache | None = None) -> float | None:
    """Mean loss over fixed full batches of the val split (the same batches every time): all of them,
    or the first ``val_batches``. Every batch has B pairs, so its chance level is ln(2B - 1)."""
    if len(pairs) < 2:
        return None
    losses = []
    model.eval()
    batches = list(one_epoch(pairs, min(train.batch_size, len(pairs)), random.Random(12345), allow_partial=False))
    if not batches:  # pairs too entangled to fill one batch of distinct notes: use what fits
        batches = list(one_epoch(pairs, min(train.batch_size, len(pairs)), random.Random(12345), allow_partial=True))
    with torch.no_grad(), autocast_for(device, train.bf16):
        for batch in batches[: train.val_batches or None]:
            out = model(prepare_batch(processor, batch, notes, cache).to(device))
            losses.append(float(batch_loss(model, out)))
    model.train()
    return float(np.mean(losses)) if losses else None


class BatchStream(torch.utils.data.IterableDataset):
    """Prepared training batches; with DataLoader workers, worker k takes every k-th batch."""

    def __init__(self, pairs: list[Pair], notes: dict[str, dict], processor: NoteProcessor, train: TrainConfig,
                 shard: tuple[int, int], skip: int, cache: FeatureCache | None = None):
        self.pairs, self.notes, self.processor, self.train = pairs, notes, processor, train
        self.shard, self.skip, self.cache = shard, skip, cache

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batches = pair_batches(self.pairs, self.train.batch_size, self.train.seed,
                               allow_partial=self.shard[1] == 1, shard=self.shard)
        for index, batch in enumerate(batches):
            if index < self.skip or index % workers != worker:
                continue
            yield prepare_batch(self.processor, batch, self.notes, self.cache)


def planned(cfg: TrainConfig, train_pairs: int, world: int) -> TrainConfig:
    """``epochs`` > 0 sets the steps: that many passes over the train pairs at B pairs per process."""
    if cfg.epochs <= 0:
        return cfg
    steps = max(1, math.ceil(cfg.epochs * train_pairs / (cfg.batch_size * world)))
    return dataclasses.replace(cfg, steps=steps)


class EarlyStopping:
    """Stops after ``patience`` validations without a val-loss improvement of more than ``min_delta``
    and keeps the best weights (on the CPU) to restore."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best_loss, self.best_step, self.best_state = math.inf, None, None
        self.bad, self.stopped = 0, False

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def should_stop(self, step: int, val_loss: float | None, model: MLRM) -> bool:
        if not self.enabled or val_loss is None:
            return False
        if val_loss < self.best_loss:  # the best weights are kept whatever the margin
            enough = val_loss < self.best_loss - self.min_delta
            self.best_loss, self.best_step = val_loss, step
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if enough:
                self.bad = 0
                return False
        self.bad += 1
        self.stopped = self.bad >= self.patience
        return self.stopped

    def restore(self, model: MLRM) -> float:
        model.load_state_dict(self.best_state)
        self.restored = True
        return self.best_loss

    def summary(self, step: int) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta, "best_step": self.best_step,
                "best_val_loss": self.best_loss if self.best_state is not None else None,
                "stopped_at": step if self.stopped else None, "restored_best": getattr(self, "restored", False)}


def backward(loss: torch.Tensor, model: MLRM, world: int) -> None:
    """Gradients of the full gathered loss: DDP averages each process's share of them, so the loss is
    scaled by W; the temperature's gradient is already whole on every process and is scaled back."""
    if world == 1:
        loss.backward()
        return
    (loss * world).backward()
    if model.tau.grad is not None:
        model.tau.grad.div_(world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random stream training draws from (dropout, above all), so a resume continues them."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    cfg = run.train = planned(cfg, len(train_set.pairs), ddp.world)
    if cfg.patience and not (cfg.val_every and val_set.pairs):
        raise InputError("early stopping (patience) needs val pairs and val_every > 0")

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

    cache = None
    if cfg.cache_vision and model.vision is not None:
        cache = FeatureCache(model, processor, notes, torch_device)
        if cfg.num_workers:  # the workers get a copy of the cache and cannot run the encoder themselves
            cache.ensure(sorted({n for pair in train_set.pairs + val_set.pairs for n in pair}))
    stream = BatchStream(train_set.pairs, notes, processor, cfg, (ddp.rank, ddp.world), skip=step, cache=cache)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.num_workers,
                                         pin_memory=torch_device.type == "cuda")
    batches = iter(loader)  # draws a base seed: the saved streams are restored after it
    if state is not None and state.get("rng") is not None and ddp.world == 1:  # DDP ranks reseed instead
        restore_rng_state(state["rng"])
    bar = None
    if progress and ddp.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {model.config.variant}", unit="step")
    dead_table = pa.Table.from_pylist(train_set.dead_letters + val_set.dead_letters, schema=DEAD_LETTER)
    diagnostics = Diagnostics(val_set.pairs, notes, cfg.batch_size, notes_path, k=cfg.recall_k,
                              max_batches=cfg.val_batches)
    reference = diagnostics.reference()
    diag_records = list(state.get("diagnostics", [])) if state is not None else []

    def diagnose() -> dict[str, Any]:
        record = {"step": step, "tau": float(model.tau.detach()),
                  **diagnostics.measure(model, processor, torch_device, cache)}
        diag_records.append(record)
        if ddp.main:
            log.info("diagnostics at step %d: %s", step,
                     ", ".join(f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float)))
        return record

    if step == 0 and cfg.diagnose_start and val_set.pairs:
        diagnose()
    early = EarlyStopping(cfg.patience, cfg.min_delta)

    def save() -> str:
        meta = {"step": step, "variant": model.config.variant, "notes": notes_path, "pairs": pairs_path,
                "train_config": to_dict(cfg), "history": history[-200:], "reference": reference,
                "diagnostics": diag_records[-200:], **({"early_stopping": early_summary} if early_summary else {}),
                "dead_letters": dict(train_set.reasons) | {f"val: {k}": v for k, v in val_set.reasons.items()}}
        training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "step": step, "history": history, "diagnostics": diag_records,
                          "rng": rng_after_step or rng_state()}
        merged = merge_records(history, diag_records)
        files = {LOG_FILE: write_log(merged, reference),
                 CURVES_FILE: plot_curves(merged, reference, f"{model.config.variant}: training")}
        version = save_checkpoint(model, tokenizer, out_dir, meta, training_state,
                                  extra_tables={"dead_letter": dead_table} if dead_table.num_rows else None,
                                  extra_files=files)
        return version

    rng_after_step: dict | None = None  # the streams as the last step left them (before any validation)
    early_summary: dict[str, Any] = {}
    notes_seen, compute_seconds, window_losses, last_loss = 0, 0.0, [], float("nan")
    val_loss, version = None, None
    until = min(cfg.steps, cfg.stop_after) if cfg.stop_after else cfg.steps
    while step < until:
        batch = next(batches)
        tick = time.perf_counter()
        with autocast_for(torch_device, cfg.bf16):
            out = wrapped(batch.to(torch_device))
            loss = batch_loss(model, out)
        optimizer.zero_grad(set_to_none=True)
        backward(loss, model, ddp.world)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        compute_seconds += time.perf_counter() - tick
        notes_seen += len(batch) * ddp.world
        step += 1
        rng_after_step = rng_state()
        last_loss = float(loss.detach())
        window_losses.append(last_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", tau=f"{float(model.tau.detach()):.3f}")
        if step % cfg.log_every == 0 or step == until:
            record = {"step": step, "loss": float(np.mean(window_losses)), "tau": float(model.tau.detach()),
                      "lr": scheduler.get_last_lr()[0], "notes_per_s": notes_seen / max(compute_seconds, 1e-9)}
            window_losses = []
            history.append(record)
            if ddp.main:
                log.info("step %d loss %.4f%s", step, record["loss"],
                         f" val_loss {record['val_loss']:.4f}" if record.get("val_loss") is not None else "")
        if cfg.val_every and step % cfg.val_every == 0 and step != until and val_set.pairs:
            measured = diagnose()
            if history and history[-1]["step"] == step:
                history[-1]["val_loss"] = measured.get("val_loss")
            if early.should_stop(step, measured.get("val_loss"), model):
                log.info("early stopping at step %d: best val loss %.4f at step %d", step, early.best_loss,
                         early.best_step)
                break
        if cfg.save_every and step % cfg.save_every == 0 and step != until and ddp.main:
            save()
    if bar is not None:
        bar.close()
    if early.stopped:
        val_loss = early.restore(model)
    else:
        val_loss = diagnose().get("val_loss") if val_set.pairs else None
        if early.best_state is not None and val_loss is not None and early.best_loss < val_loss:
            val_loss = early.restore(model)
    if early.enabled:
        early_summary.update(early.summary(step))
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
