"""The untrained checkpoint: the model with its pretrained backbones and random new layers, saved
without a training step, built from the same options as ``i2i train`` so it differs only in training."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from embedding.train_cli import TrainJob


def save_untrained(out: str | Path, job: "TrainJob", seed: int = 0) -> Path:
    """Writes the checkpoint ``embedding.train_cli.run(job)`` would start from into ``out``; returns ``out``.

    Only the job's model configuration matters (preset, ``config`` file, variant and model options);
    its notes and pairs are not read, and its ``out`` is replaced by ``out``.
    """
    import torch

    from embedding.backbones import load_tokenizer
    from embedding.checkpoint import save_checkpoint
    from embedding.mlrm import MLRM
    from embedding.train_cli import build_run_config

    job = dataclasses.replace(job, notes=job.notes or "-", pairs=job.pairs or "-", out=str(out))
    config = build_run_config(job).model
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(config.llm)
    model = MLRM(config, len(tokenizer), pretrained=True)
    save_checkpoint(model, tokenizer, out, meta={"step": 0, "backbone": job.backbone or "offline", "zero_shot": True})
    return Path(out)


def save_untrained_checkpoint(out: str | Path, variant: str, train_args: Sequence[str] = (), seed: int = 0) -> Path:
    """Writes the checkpoint ``i2i train --variant VARIANT TRAIN_ARGS`` would start from; returns ``out``."""
    from embedding.train_cli import TrainJob, parser

    args = parser().parse_args(["--notes", "-", "--pairs", "-", "--out", str(out), "--variant", variant,
                                *train_args])
    return save_untrained(out, TrainJob(**vars(args)), seed)
