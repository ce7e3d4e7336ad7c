"""The replay's typed configuration: what ``i2i eval replay``'s options say, checked before anything
is built, so bad input stops the run with one line naming the problem and nothing half done."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from i2i.core.errors import InputError

if TYPE_CHECKING:
    from embedding.train_cli import TrainJob

EMBEDDING_CHANNELS = ("trained", "untrained", "minilm", "image")
OTHER_CHANNELS = ("cooccur", "popularity", "random", "oracle")
ALL_CHANNELS = EMBEDDING_CHANNELS + OTHER_CHANNELS
TITLES = {"trained": "trained model", "untrained": "untrained checkpoint", "minilm": "MiniLM text",
          "image": "image features"}
REFERENCE = TITLES["trained"]
BACKBONES = ("offline", "tiny")


@dataclass
class ReplayConfig:
    """One replay of day ``day`` of the dataset ``data`` (as ``i2i data`` writes it) into ``out``.

    The model options left ``None`` are the training recipe's (``--backbone``'s preset, then
    ``train_config``), exactly as ``i2i train`` with no other options would use them.
    """

    data: Path
    day: dt.date
    out: Path = Path("replay_out")
    span: int = 1  # the days from D on replayed as one day (sparse data such as MovieLens)
    checkpoint: Path | None = None  # the trained model's channel uses this instead of training one
    json_path: Path | None = None  # a copy of the JSON table
    report: Path | None = None  # the static HTML report's directory
    deletes: str | None = None  # notes deleted on day D: Parquet with note_id, or one id a line
    delete_random: int = 0  # more notes of the day D-1 catalogue deleted on day D (seeded)
    channels: tuple[str, ...] = ALL_CHANNELS
    history: int = 20  # latest distinct clicked notes sent per user
    variant: str = "notellm2"
    backbone: str = "offline"
    train_config: str | None = None  # JSON recipe over the backbone's preset (i2i train --config)
    steps: int | None = None
    batch_size: int | None = None
    llm_layers: int | None = None
    device: str | None = None  # embedding device; None: CUDA when present
    cooccur_top_t: int = 100  # related notes per note of the co-occurrence channel
    popularity_days: int = 7
    report_users: int = 8
    bootstrap: int = 1000
    seed: int = 0
    recall_workers: int = 4  # recall requests in flight per server channel
    beam_args: list[str] = field(default_factory=lambda: ["--runner=DirectRunner"])
    command: str | None = None  # the command line that asked for the run, recorded in the summary

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.channels = tuple(self.channels)

    def check(self) -> None:
        """Refuses options no replay can run with (InputError naming the option)."""
        from embedding.config import VARIANTS

        unknown = sorted(set(self.channels) - set(ALL_CHANNELS))
        if unknown or not self.channels:
            raise InputError(f"--channels: unknown {unknown or 'empty list'}; choose from {','.join(ALL_CHANNELS)}")
        for name in ("span", "history", "cooccur_top_t", "popularity_days", "bootstrap", "recall_workers"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.delete_random < 0:
            raise InputError(f"--delete-random must not be negative, got {self.delete_random}")
        if self.report_users < 0:
            raise InputError(f"--report-users must not be negative, got {self.report_users}")
        if self.variant not in VARIANTS:
            raise InputError(f"--variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")
        if self.backbone not in BACKBONES:
            raise InputError(f"--backbone {self.backbone!r}: expected one of {', '.join(BACKBONES)}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size is not None and self.batch_size < 2:
            raise InputError(f"--batch-size must be at least 2 (in-batch negatives), got {self.batch_size}")
        if self.llm_layers is not None and self.llm_layers < 1:
            raise InputError(f"--llm-layers must be at least 1, got {self.llm_layers}")
        if self.train_config is not None and not Path(self.train_config).is_file():
            raise InputError(f"--train-config {self.train_config}: no such file")
        if self.needs_training() or "untrained" in self.channels:
            from embedding.train_cli import build_run_config

            try:  # the recipe as training will read it: a bad key fails here, not after the Beam jobs
                build_run_config(self.train_job("-", "-", "-"))
            except InputError as exc:
                raise InputError(f"the training recipe: {exc}") from None
        if self.checkpoint is not None and not (Path(self.checkpoint) / "meta.json").exists():
            raise InputError(f"--checkpoint {self.checkpoint} is not a checkpoint directory (no meta.json)")
        if self.device not in (None, "cpu", "cuda"):
            raise InputError(f"--device {self.device!r}: expected cpu or cuda")
        if self.device == "cuda" and self.embedding_channels():
            import torch

            if not torch.cuda.is_available():
                raise InputError("--device cuda was asked for, but no CUDA device is available")

    def embedding_channels(self) -> list[str]:
        return [c for c in EMBEDDING_CHANNELS if c in self.channels]

    def needs_training(self) -> bool:
        return self.checkpoint is None and "trained" in self.channels

    def train_job(self, notes: str, pairs: str, out: str) -> "TrainJob":
        """The day D-1 model's ``i2i train`` job: the recipe, overridden only where an option was given."""
        from embedding.train_cli import TrainJob

        return TrainJob(notes=notes, pairs=pairs, out=out, variant=self.variant, backbone=self.backbone,
                        config=self.train_config, steps=self.steps, batch_size=self.batch_size,
                        llm_layers=self.llm_layers, quiet=True)
