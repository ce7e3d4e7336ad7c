"""Day D-1's offline system, made by the project's own stages: co-occurrence and pairs (Beam),
training (or a given checkpoint), and an untrained checkpoint of the same configuration.

Every output is published atomically by its stage and skipped when present, so an interrupted
replay resumes where it stopped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from i2i.app.cli import run_subcommand
from i2i.app.replay.split import DaySplit
from i2i.core.io import write_events_by_day, write_table
from i2i.core.schemas import conform


@dataclass
class BuildConfig:
    """How the day D-1 model is trained when no checkpoint is given."""

    variant: str = "notellm2"
    backbone: str = "offline"
    steps: int = 120
    batch_size: int = 16
    llm_layers: int | None = None
    extra_train_args: list[str] = field(default_factory=list)
    beam_args: list[str] = field(default_factory=lambda: ["--runner=DirectRunner"])

    def train_args(self) -> list[str]:
        args = ["--backbone", self.backbone, "--steps", str(self.steps), "--batch-size", str(self.batch_size)]
        if self.llm_layers:
            args += ["--llm-layers", str(self.llm_layers)]
        return args + self.extra_train_args


@dataclass
class DayBefore:
    """Paths of everything built as of day D-1, plus day D's notes and deletions."""

    root: Path

    def __post_init__(self) -> None:
        data = self.root / "data"
        self.notes_before, self.events_before = data / "notes_before", data / "events_before"
        self.notes_day, self.deletes = data / "notes_day", data / "deletes"
        self.cooccur, self.pairs = self.root / "cooccur", self.root / "pairs"
        self.trained, self.untrained = self.root / "checkpoints" / "trained", self.root / "checkpoints" / "untrained"


def write_split(split: DaySplit, paths: DayBefore) -> None:
    """The day D-1 catalogue and events, and day D's catalogue (old + new notes) and deletions."""
    write_table(conform(split.notes_before, "notes"), paths.notes_before)
    write_events_by_day(conform(split.events_before, "events"), paths.events_before)
    day = pa.concat_tables([split.notes_before, split.new_notes])
    if split.deleted:
        day = day.filter(pc.invert(pc.is_in(day.column("note_id"), value_set=pa.array(split.deleted))))
    write_table(conform(day, "notes"), paths.notes_day)
    write_table(pa.table({"note_id": pa.array(split.deleted, pa.string())}), paths.deletes)


def build_day_before(split: DaySplit, paths: DayBefore, config: BuildConfig,
                     checkpoint: Path | None = None) -> Path:
    """Runs the day D-1 stages; returns the checkpoint of the trained-model channel."""
    write_split(split, paths)
    if not (paths.cooccur / "related").exists():
        run_subcommand(["cooccur", "--events", str(paths.events_before), "--out", str(paths.cooccur),
                        *config.beam_args])
    if checkpoint is not None:
        return checkpoint
    if not paths.pairs.exists():
        run_subcommand(["pairs", "--related", str(paths.cooccur / "related"), "--notes", str(paths.notes_before),
                        "--out", str(paths.pairs), *config.beam_args])
    done = paths.trained.parent / "trained.done.json"
    if not done.exists():
        run_subcommand(["train", "--notes", str(paths.notes_before), "--pairs", str(paths.pairs),
                        "--out", str(paths.trained), "--variant", config.variant, "--quiet", *config.train_args()])
        done.write_text(json.dumps({"train_args": config.train_args(), "variant": config.variant}) + "\n")
    return paths.trained


def untrained_checkpoint(paths: DayBefore, config: BuildConfig) -> Path:
    """The untrained checkpoint of the same variant and backbone as the trained one."""
    if not (paths.untrained / "meta.json").exists():
        from embedding.untrained import save_untrained_checkpoint

        print(f"building the untrained {config.variant} checkpoint {paths.untrained}", flush=True)
        save_untrained_checkpoint(paths.untrained, config.variant, config.train_args())
    return paths.untrained
