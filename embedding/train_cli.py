"""``i2i train``: trains the representation model into a self-contained checkpoint directory."""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedding.config import VARIANTS, RunConfig, load_json, merge, preset, run_config_from_dict
from i2i.core.cmdline import ArgumentParser
from i2i.core.errors import InputError

if TYPE_CHECKING:
    from embedding.train import TrainResult

BACKBONES = {"tiny": "tiny", "offline": "cpu_offline"}


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="i2i train",
        description="Contrastive training of the NoteLLM-2 representation model on related-note pairs. "
                    "Configuration: the --backbone preset, then --config FILE (JSON, same sections as "
                    "embedding/configs/*.json), then the options below.")
    p.add_argument("--notes", help="notes table (Parquet directory or file)")
    p.add_argument("--pairs", help="pairs table with split train/val/test")
    p.add_argument("--out", help="checkpoint directory to write (replaced atomically)")
    p.add_argument("--variant", choices=VARIANTS, help="model variant (default notellm2)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default=None,
                   help="tiny: tiny random backbones (tests); offline: SmolLM2-135M + EfficientNet-Lite0, "
                        "CPU-sized (default)")
    p.add_argument("--config", help="JSON config file overriding the preset (e.g. embedding/configs/gpu_full.json)")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--batch-size", type=int, help="pairs per step and process (2x notes)")
    p.add_argument("--llm-layers", type=int, help="keep only the first N LLM layers")
    p.add_argument("--lr", type=float, help="peak learning rate of the LLM")
    p.add_argument("--head-lr", type=float, help="peak learning rate of connector, gate, projection, temperature")
    p.add_argument("--image-size", type=int, help="image side in pixels")
    p.add_argument("--num-queries", type=int, help="L_c, visual tokens into the LLM")
    p.add_argument("--embed-dim", type=int, help="output embedding dimension")
    p.add_argument("--alpha", type=float, help="eq. 9 weight of the multimodal loss")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-every", type=int, help="validation loss every N steps (0 = only at the end)")
    p.add_argument("--save-every", type=int, help="save the checkpoint every N steps (0 = only at the end)")
    p.add_argument("--stop-after", type=int,
                   help="stop after this step of the --steps schedule and save; --resume continues (time-boxed jobs)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--num-workers", type=int, help="DataLoader workers preparing batches")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--no-bf16", action="store_true", help="train in float32 on CUDA too")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out up to --steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class TrainJob:
    """One ``i2i train`` run, typed: the command line's options (``None``: the preset's or config file's value)."""

    notes: str | None = None
    pairs: str | None = None
    out: str | None = None
    variant: str | None = None
    backbone: str | None = None  # tiny or offline (default)
    config: str | None = None  # JSON file overriding the preset
    steps: int | None = None
    batch_size: int | None = None
    llm_layers: int | None = None
    lr: float | None = None
    head_lr: float | None = None
    image_size: int | None = None
    num_queries: int | None = None
    embed_dim: int | None = None
    alpha: float | None = None
    seed: int | None = None
    val_every: int | None = None
    save_every: int | None = None
    log_every: int | None = None
    num_workers: int | None = None
    gradient_checkpointing: bool | None = None
    no_bf16: bool = False
    device: str | None = None
    resume: bool = False
    stop_after: int | None = None  # stop after this many steps of the schedule (a resumable part of a run)
    quiet: bool = False


def build_run_config(args: argparse.Namespace | TrainJob) -> RunConfig:
    data = preset(BACKBONES[args.backbone or "offline"])
    if args.config:
        data = merge(data, load_json(args.config))
    model_over = {"variant": args.variant, "embed_dim": args.embed_dim, "alpha": args.alpha}
    sections = {
        "model": {k: v for k, v in model_over.items() if v is not None},
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "head_lr": args.head_lr,
                  "seed": args.seed, "val_every": args.val_every, "save_every": args.save_every,
                  "stop_after": args.stop_after, "log_every": args.log_every, "num_workers": args.num_workers,
                  "bf16": False if args.no_bf16 else None},
    }
    sections["model"]["llm"] = {"num_layers": args.llm_layers, "gradient_checkpointing": args.gradient_checkpointing}
    sections["model"]["vision"] = {"image_size": args.image_size}
    sections["model"]["connector"] = {"num_queries": args.num_queries}
    data = merge(data, prune(sections))
    for key in ("notes", "pairs", "out"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    run = run_config_from_dict(data)
    for key in ("notes", "pairs", "out"):
        if not getattr(run, key):
            raise InputError(f"--{key} is required (or '{key}' in the --config file)")
    for name in ("steps", "batch_size", "log_every"):
        if getattr(run.train, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if run.train.batch_size < 2:
        raise InputError("--batch-size must be at least 2 (in-batch negatives)")
    return run


def prune(tree: dict) -> dict:
    """Drops options left unset so they do not override the config."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = prune(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def run(job: TrainJob) -> "TrainResult":
    """The training stage's one entry point: the run config from preset, file and options, then training."""
    config = build_run_config(job)
    from embedding.train import train

    return train(config, config.notes, config.pairs, config.out, device=job.device, resume=job.resume,
                 progress=not job.quiet)


def main(argv: list[str]) -> int:
    job = TrainJob(**vars(parser().parse_args(argv)))
    logging.getLogger("embedding").setLevel(logging.INFO)
    result = run(job)
    variant = build_run_config(job).model.variant
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a (no val pairs)"
    print(f"trained {variant} for {result.steps} steps on {result.train_pairs} train pairs "
          f"({result.val_pairs} val) in {result.seconds:.1f}s, {result.notes_per_second:.1f} notes/s")
    print(f"loss {result.final_train_loss:.4f}, val loss {val}")
    if result.dead_letters:
        print(f"skipped pairs: {json.dumps(result.dead_letters)} (see {result.out_dir}/dead_letter)")
    print(f"checkpoint {result.out_dir} model_version {result.model_version}")
    return 0
