"""``i2i run --date YYYY-MM-DD --config FILE``: the scheduled daily run (cron, Airflow).

Stages, in order: co-occurrence and pairs over the date's events partition, optional retraining,
embedding of the notes the table lacks under the checkpoint's model version, and the index:
a first build, an update while the served index holds the checkpoint's model version, or, after
a retrain moved the checkpoint to a new model, a rebuild from the new model's embeddings of the
catalogue (CURRENT's settings and tombstones kept). The run then checks that CURRENT holds the
checkpoint's model version: the served index never silently lags the model. Each stage's outputs
are atomic and a stage whose complete output exists is skipped, so a rerun after a failure picks
up where it stopped. A lock file keeps two runs from overlapping. Exit codes a scheduler can act on:

  0   every stage done (or already done)
  1   a stage failed; earlier outputs and the served index are untouched; rerun to resume
  2   bad input or configuration; fix before rerunning
  75  temporary: another run holds the lock, or storage (Redis) is unreachable; retry later
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import tomllib

from i2i.core.cmdline import ArgumentParser
from i2i.core.config import from_dict
from i2i.core.errors import EXIT_OK, EXIT_TEMPORARY, Failure, I2IError, InputError, exit_code
from i2i.core.io import atomic_write_text
from i2i.core.locks import LockHeld, exclusive_lock

LOG = logging.getLogger("i2i.run")
T = TypeVar("T")


@dataclass
class DailyConfig:
    """Paths and per-stage options; relative paths resolve against the config file's folder."""

    events: Path
    notes: Path
    runs: Path
    checkpoint: Path
    table: str
    index_dir: Path
    deletes: str = ""  # optional deletes table per day; "{date}" is replaced by the run date
    beam_args: list[str] = field(default_factory=lambda: ["--runner=DirectRunner"])  # Beam's own options
    retrain: bool = False
    # Per-stage options, one TOML table each; their keys are the fields of the stage's typed config.
    cooccur: dict[str, Any] = field(default_factory=dict)  # pipelines.transforms.CooccurConfig
    pairs: dict[str, Any] = field(default_factory=dict)  # pipelines.pairs.PairsJob
    train: dict[str, Any] = field(default_factory=dict)  # embedding.train_cli.TrainJob
    embed: dict[str, Any] = field(default_factory=dict)  # embedding.embed_job.EmbedJobConfig
    index: dict[str, Any] = field(default_factory=dict)  # index.jobs.IndexJob ([index.build], [index.policy])

    @classmethod
    def load(cls, path: Path) -> "DailyConfig":
        if not path.exists():
            raise InputError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"config {path} is not valid TOML: {exc}") from exc
        config = from_dict(cls, raw, str(path))
        base = path.resolve().parent
        for name in ("events", "notes", "runs", "checkpoint", "index_dir"):
            setattr(config, name, base / getattr(config, name))
        if config.table.startswith("parquet:") and not os.path.isabs(config.table[len("parquet:"):]):
            config.table = "parquet:" + str(base / config.table[len("parquet:"):])
        if config.deletes and not os.path.isabs(config.deletes):
            config.deletes = str(base / config.deletes)
        try:
            DailyRun(config, dt.date(2000, 1, 1)).check_stage_options()
        except InputError as exc:
            raise InputError(f"config {path}: {exc}") from None
        return config


def run_lock(runs: Path):
    """An exclusive, non-blocking lock on ``runs/.lock``; the OS releases it if the process dies."""
    return exclusive_lock(runs / ".lock", wait=False, note=f"{os.getpid()}\n")


class StageFailed(Failure):
    """A stage that did not finish; ``exit_code`` is the kind of its cause (2 input, 75 temporary, 1 else)."""

    def __init__(self, stage: str, reason: str, code: int = Failure.exit_code) -> None:
        super().__init__(f"stage {stage} failed: {reason}")
        self.stage = stage
        self.exit_code = code


@dataclass
class DailyRun:
    config: DailyConfig
    date: dt.date

    @property
    def folder(self) -> Path:
        return self.config.runs / self.date.isoformat()

    def marker(self, stage: str) -> Path:
        return self.folder / "_stages" / f"{stage}.json"

    def stages(self) -> list[tuple[str, Callable[[], Any], Callable[[Any], Any]]]:
        """(name, job, run) of each stage in order: ``job()`` makes the stage's typed config (bad input
        there is the user's to fix), ``run(config)`` runs the stage's typed entry point."""
        stages = [("cooccur", self.cooccur_job, self.run_cooccur), ("pairs", self.pairs_job, self.run_pairs)]
        if self.config.retrain:
            stages.append(("train", self.train_job, self.run_train))
        stages += [("embed", self.embed_job, self.run_embed), ("index", self.index_job, self.run_index)]
        return stages

    def check_stage_options(self) -> None:
        """Refuses a stage table whose keys its stage's config lacks (or that sets a path the run decides)."""
        self.cooccur_job(partition=Path("."))
        self.pairs_job()
        self.train_job()
        self.embed_job()
        self.index_job("update")

    def cooccur_job(self, partition: Path | None = None):
        from pipelines.cooccur import CooccurJob
        from pipelines.transforms import CooccurConfig

        if partition is None:
            partition = self.config.events / f"dt={self.date.isoformat()}"
            if not partition.exists():
                raise InputError(f"no events partition for {self.date}: {partition}")
        return CooccurJob(str(partition), str(self.folder / "cooccur"),
                          config=from_dict(CooccurConfig, self.config.cooccur, "cooccur"),
                          beam_args=list(self.config.beam_args))

    def pairs_job(self):
        from pipelines.pairs import PairsJob

        return stage_config(PairsJob, self.config.pairs, "pairs", related=str(self.folder / "cooccur" / "related"),
                            notes=str(self.config.notes), out=str(self.folder / "pairs"),
                            beam_args=list(self.config.beam_args))

    def train_job(self):
        from embedding.train_cli import TrainJob

        return stage_config(TrainJob, self.config.train, "train", notes=str(self.config.notes),
                            pairs=str(self.folder / "pairs"), out=str(self.config.checkpoint))

    def embed_job(self):
        from embedding.embed_job import EmbedJobConfig

        return stage_config(EmbedJobConfig, self.config.embed, "embed", notes=str(self.config.notes),
                            checkpoint=str(self.config.checkpoint), table=self.config.table)

    def checkpoint_model_version(self) -> str:
        from embedding.checkpoint import read_meta

        model_version = read_meta(self.config.checkpoint).get("model_version")
        if not model_version:
            raise InputError(f"checkpoint {self.config.checkpoint} names no model_version in its meta.json")
        return model_version

    def served_model_version(self) -> str | None:
        from index.store import IndexStore

        store = IndexStore(self.config.index_dir)
        current = store.current_version()
        return None if current is None else store.manifest(current).model_version

    def index_job(self, operation: str | None = None):
        """build (no index yet), update (same model) or rebuild under the checkpoint's new model version."""
        from index.jobs import IndexJob

        index_dir = self.config.index_dir
        model_version = None
        if operation is None:
            model_version = self.checkpoint_model_version()
            served = self.served_model_version()
            operation = "build" if served is None else "update" if served == model_version else "rebuild"
            if operation == "rebuild":
                LOG.info("the checkpoint moved to model version %s, the index serves %s: rebuilding the index "
                         "from the new model's embeddings", model_version, served)
        deletes = self.config.deletes.replace("{date}", self.date.isoformat())
        if not (deletes and Path(deletes).exists()):
            deletes = None
        return stage_config(IndexJob, self.config.index, "index", operation=operation, index_dir=str(index_dir),
                            table=self.config.table, deletes=deletes, model_version=model_version,
                            notes=str(self.config.notes))

    def run_cooccur(self, job):
        from pipelines.cooccur import format_summary, run

        summary = run(job)
        LOG.info("%s", format_summary(summary))
        return summary

    def run_pairs(self, job):
        from pipelines.pairs import format_summary, run

        summary = run(job)
        LOG.info("%s", format_summary(summary))
        return summary

    def run_train(self, job):
        from embedding.train_cli import run

        result = run(job)
        LOG.info("trained model version %s into %s", result.model_version, result.out_dir)
        return result

    def run_embed(self, job):
        from embedding.embed_cli import run

        summary = run(job)
        LOG.info("%s", "; ".join(summary.lines()))
        return summary

    def run_index(self, job):
        from index.jobs import run

        summary = run(job)
        LOG.info("%s", "; ".join(summary.lines()))
        return summary

    def check_index_follows_model(self) -> None:
        """After the index stage: CURRENT must hold the checkpoint's model version."""
        model_version, served = self.checkpoint_model_version(), self.served_model_version()
        if served != model_version:
            raise StageFailed("index", f"the served index holds model version {served!r}, the checkpoint "
                                       f"{model_version!r}: the index would lag the model")

    def run(self, force: bool = False) -> dict:
        summary: dict = {"date": self.date.isoformat(), "stages": {}}
        for name, make_job, run_stage in self.stages():
            if self.marker(name).exists() and not force:
                LOG.info("stage %s: already done for %s, skipped", name, self.date)
                summary["stages"][name] = "skipped (done)"
                continue
            try:
                job = make_job()
            except I2IError:
                raise  # bad input or configuration, named as such (exit 2)
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable index directory
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
            LOG.info("stage %s: started", name)
            started = time.perf_counter()
            try:
                run_stage(job)
            except I2IError as exc:
                raise StageFailed(name, str(exc), exit_code(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - any crash of a stage is reported as that stage's failure
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
            if name == "index":
                self.check_index_follows_model()
            seconds = round(time.perf_counter() - started, 2)
            write_marker(self.marker(name), {"stage": name, "seconds": seconds,
                                             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()})
            summary["stages"][name] = f"done in {seconds}s"
        return summary


def stage_config(cls: type[T], options: dict[str, Any], stage: str, **decided: Any) -> T:
    """The stage's typed config from its TOML table plus what the daily run decides (paths)."""
    taken = sorted(set(options) & set(decided))
    if taken:
        raise InputError(f"config [{stage}]: {', '.join(taken)} is set by the daily run, not by the config file")
    return from_dict(cls, {**options, **decided}, stage)


def write_marker(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="i2i run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="partition date, YYYY-MM-DD")
    parser.add_argument("--config", required=True, type=Path, help="TOML file (see docs/operations.md)")
    parser.add_argument("--force", action="store_true", help="rerun stages that are already done")
    args = parser.parse_args(argv)
    config = DailyConfig.load(args.config)
    run = DailyRun(config, args.date)
    try:
        with run_lock(config.runs):
            summary = run.run(force=args.force)
    except LockHeld as exc:
        print(f"i2i run: another i2i run holds {exc.path} (pid {exc.holder or '?'}); retry later")
        return EXIT_TEMPORARY
    except StageFailed as exc:
        advice = {2: "fix the input, then rerun", 75: "retry later"}.get(exc.exit_code, "rerun to resume")
        print(f"i2i run: {exc}; earlier outputs and the served index are untouched; {advice}")
        return exit_code(exc)
    print(f"i2i run {args.date}: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()))
    return EXIT_OK
