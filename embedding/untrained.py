"""The untrained checkpoint: the model with its pretrained backbones and random new layers, saved
without a training step, built from the same options as ``i2i train`` so it differs only in training."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def save_untrained_checkpoint(out: str | Path, variant: str, train_args: Sequence[str] = (), seed: int = 0) -> Path:
    """Writes the checkpoint ``i2i train --variant VARIANT TRAIN_ARGS`` would start from; returns ``out``."""
    import torch

    from embedding.backbones import load_tokenizer
    from embedding.checkpoint import save_checkpoint
    from embedding.mlrm import MLRM
    from embedding.train_cli import build_run_config, parser

    args = parser().parse_args(["--notes", "-", "--pairs", "-", "--out", str(out), "--variant", variant,
                                *train_args])
    config = build_run_config(args).model
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(config.llm)
    model = MLRM(config, len(tokenizer), pretrained=True)
    save_checkpoint(model, tokenizer, out, meta={"step": 0, "backbone": args.backbone or "offline", "zero_shot": True})
    return Path(out)
