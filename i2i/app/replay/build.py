"""Day D-1's offline system, made by the project's own stages through their typed entry points:
co-occurrence and pairs (Beam), training (or a given checkpoint), and an untrained checkpoint of
the same configuration.

Every output is published atomically by its stage and skipped when present, so an interrupted
replay resumes where it stopped. What each output was made from is recorded beside it; a rerun into
the same directory with other inputs or another recipe is refused instead of mixing the two.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa

from i2i.app.replay.config import ReplayConfig
from i2i.app.replay.split import DaySplit
from i2i.core.errors import InputError
from i2i.core.io import atomic_write_text, write_events_by_day, write_table
from i2i.core.schemas import conform

if TYPE_CHECKING:
    from embedding.train_cli import TrainJob

Log = Callable[[str], None]


@dataclass
class DayBefore:
    """Paths of everything built as of day D-1, plus day D's notes and deletions."""

    root: Path

    def __post_init__(self) -> None:
        data = self.root / "data"
        self.notes_before, self.events_before = data / "notes_before", data / "events_before"
        self.new_notes, self.deletes = data / "new_notes", data / "deletes"
        self.cooccur, self.pairs = self.root / "cooccur", self.root / "pairs"
        self.trained, self.untrained = self.root / "checkpoints" / "trained", self.root / "checkpoints" / "untrained"

    def marker(self, name: str) -> Path:
        return self.root / f"_{name}.done.json"


def check_marker(path: Path, made_from: dict[str, Any], what: str) -> bool:
    """True when ``path`` records that its output was made from ``made_from`` (skip the stage); False when
    absent (run it); InputError when the output there was made from something else."""
    if not path.exists():
        return False
    recorded = json.loads(path.read_text()).get("made_from")
    if recorded != made_from:
        changed = sorted(k for k in set(recorded or {}) | set(made_from)
                         if (recorded or {}).get(k) != made_from.get(k))
        raise InputError(f"{path.parent} holds {what} made from other inputs ({', '.join(changed)} differ): "
                         "replay into another --out, or remove it to rebuild")
    return True


def write_marker(path: Path, made_from: dict[str, Any], **extra: Any) -> None:
    atomic_write_text(path, json.dumps({"made_from": made_from, **extra}, indent=2, default=str) + "\n")


def split_identity(split: DaySplit, config: ReplayConfig) -> dict[str, Any]:
    """What the written split depends on: the data, the day and span, and the deleted notes."""
    deleted = hashlib.sha256("\n".join(split.deleted).encode()).hexdigest()[:16]
    return {"data": str(config.data.resolve()), "day": split.day.isoformat(), "span": config.span,
            "notes_before": split.notes_before.num_rows, "new_notes": split.new_notes.num_rows,
            "events_before": split.events_before.num_rows, "deleted": len(split.deleted), "deleted_sha256": deleted}


def write_split(split: DaySplit, paths: DayBefore, made_from: dict[str, Any]) -> None:
    """The day D-1 catalogue and events, day D's new notes and its deletions (once per output directory)."""
    marker = paths.marker("split")
    if check_marker(marker, made_from, "a split"):
        return
    write_table(conform(split.notes_before, "notes"), paths.notes_before)
    write_events_by_day(conform(split.events_before, "events"), paths.events_before)
    write_table(conform(split.new_notes, "notes"), paths.new_notes)
    write_table(pa.table({"note_id": pa.array(split.deleted, pa.string())}), paths.deletes)
    write_marker(marker, made_from)


def cooccur_job(paths: DayBefore, config: ReplayConfig):
    from pipelines.cooccur import CooccurJob

    return CooccurJob(str(paths.events_before), str(paths.cooccur), beam_args=list(config.beam_args))


def pairs_job(paths: DayBefore, config: ReplayConfig):
    from pipelines.pairs import PairsJob

    return PairsJob(str(paths.cooccur / "related"), str(paths.notes_before), str(paths.pairs),
                    beam_args=list(config.beam_args))


def train_job(paths: DayBefore, config: ReplayConfig) -> "TrainJob":
    return config.train_job(str(paths.notes_before), str(paths.pairs), str(paths.trained))


def recipe(job: "TrainJob") -> dict[str, Any]:
    """The options of a training job that decide its model (not where it reads and writes)."""
    keep = ("variant", "backbone", "config", "steps", "batch_size", "llm_layers")
    return {name: getattr(job, name) for name in keep}


def run_cooccur(paths: DayBefore, config: ReplayConfig, log: Log) -> None:
    from pipelines.cooccur import format_summary, run

    if (paths.cooccur / "_SUMMARY.json").exists():
        return
    log(format_summary(run(cooccur_job(paths, config))))


def run_pairs(paths: DayBefore, config: ReplayConfig, log: Log) -> None:
    from pipelines.pairs import format_summary, run

    if (paths.pairs / "_SUMMARY.json").exists():
        return
    log(format_summary(run(pairs_job(paths, config))))


def run_train(paths: DayBefore, config: ReplayConfig, log: Log) -> Path:
    """Trains the day D-1 model with the recipe (once); returns its checkpoint."""
    from embedding.train_cli import run

    job = train_job(paths, config)
    marker = paths.marker("trained")
    if check_marker(marker, recipe(job), "a trained checkpoint"):
        return paths.trained
    result = run(job)
    log(f"trained {job.variant} for {result.steps} steps in {result.seconds:.1f}s, loss "
        f"{result.final_train_loss:.4f}; checkpoint {result.out_dir} model_version {result.model_version}")
    write_marker(marker, recipe(job), model_version=result.model_version, steps=result.steps,
                 seconds=round(result.seconds, 1))
    return paths.trained


def untrained_checkpoint(paths: DayBefore, config: ReplayConfig, log: Log) -> Path:
    """The untrained checkpoint of the same recipe as the trained one (once)."""
    from embedding.untrained import save_untrained

    job = train_job(paths, config)
    marker = paths.marker("untrained")
    if check_marker(marker, recipe(job), "an untrained checkpoint"):
        return paths.untrained
    log(f"building the untrained {config.variant} checkpoint {paths.untrained}")
    save_untrained(paths.untrained, dataclasses.replace(job, out=str(paths.untrained)), seed=0)
    write_marker(marker, recipe(job))
    return paths.untrained
