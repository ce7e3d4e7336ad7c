"""``i2i run --date YYYY-MM-DD --config FILE``: the scheduled daily run (cron, Airflow).

Stages, in order: co-occurrence and pairs over the date's events partition, optional retraining,
embedding of new notes, index update (or a first build). Each stage's outputs are atomic and a
stage whose complete output exists is skipped, so a rerun after a failure picks up where it
stopped. A lock file keeps two runs from overlapping. Exit codes a scheduler can act on:

  0   every stage done (or already done)
  1   a stage failed; earlier outputs and the served index are untouched; rerun to resume
  2   bad input or configuration; fix before rerunning
  75  another run holds the lock; retry later (EX_TEMPFAIL)
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
from typing import Callable

import tomllib

from i2i.core.cmdline import ArgumentParser
from i2i.core.config import from_dict
from i2i.core.errors import InputError
from i2i.core.io import atomic_write_text
from i2i.core.locks import LockHeld, exclusive_lock

LOG = logging.getLogger("i2i.run")
EXIT_OK, EXIT_STAGE_FAILED, EXIT_BAD_INPUT, EXIT_LOCKED = 0, 1, 2, 75


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
    beam_args: list[str] = field(default_factory=lambda: ["--runner=DirectRunner"])
    cooccur_args: list[str] = field(default_factory=list)
    pairs_args: list[str] = field(default_factory=list)
    retrain: bool = False
    train_args: list[str] = field(default_factory=list)
    embed_args: list[str] = field(default_factory=list)
    index_args: list[str] = field(default_factory=list)

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
        return config


def run_lock(runs: Path):
    """An exclusive, non-blocking lock on ``runs/.lock``; the OS releases it if the process dies."""
    return exclusive_lock(runs / ".lock", wait=False, note=f"{os.getpid()}\n")


class StageFailed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"stage {stage} failed: {reason}")
        self.stage = stage


@dataclass
class DailyRun:
    config: DailyConfig
    date: dt.date

    @property
    def folder(self) -> Path:
        return self.config.runs / self.date.isoformat()

    def marker(self, stage: str) -> Path:
        return self.folder / "_stages" / f"{stage}.json"

    def stages(self) -> list[tuple[str, Callable[[], list[str]]]]:
        stages = [("cooccur", self.cooccur_argv), ("pairs", self.pairs_argv)]
        if self.config.retrain:
            stages.append(("train", self.train_argv))
        stages += [("embed", self.embed_argv), ("index", self.index_argv)]
        return stages

    def cooccur_argv(self) -> list[str]:
        partition = self.config.events / f"dt={self.date.isoformat()}"
        if not partition.exists():
            raise InputError(f"no events partition for {self.date}: {partition}")
        return ["cooccur", "--events", str(partition), "--out", str(self.folder / "cooccur"),
                *self.config.cooccur_args, *self.config.beam_args]

    def pairs_argv(self) -> list[str]:
        return ["pairs", "--related", str(self.folder / "cooccur" / "related"), "--notes", str(self.config.notes),
                "--out", str(self.folder / "pairs"), *self.config.pairs_args, *self.config.beam_args]

    def train_argv(self) -> list[str]:
        return ["train", "--notes", str(self.config.notes), "--pairs", str(self.folder / "pairs"),
                "--out", str(self.config.checkpoint), *self.config.train_args]

    def embed_argv(self) -> list[str]:
        return ["embed", "--notes", str(self.config.notes), "--checkpoint", str(self.config.checkpoint),
                "--table", self.config.table, *self.config.embed_args]

    def index_argv(self) -> list[str]:
        index_dir = self.config.index_dir
        if not (index_dir / "CURRENT").exists():
            return ["index", "build", "--index-dir", str(index_dir), "--table", self.config.table,
                    *self.config.index_args]
        argv = ["index", "update", "--index-dir", str(index_dir), "--table", self.config.table]
        deletes = self.config.deletes.replace("{date}", self.date.isoformat())
        if deletes and Path(deletes).exists():
            argv += ["--deletes", deletes]
        return argv + self.config.index_args

    def run(self, force: bool = False) -> dict:
        from i2i.app.cli import resolve

        summary: dict = {"date": self.date.isoformat(), "stages": {}}
        for name, make_argv in self.stages():
            if self.marker(name).exists() and not force:
                LOG.info("stage %s: already done for %s, skipped", name, self.date)
                summary["stages"][name] = "skipped (done)"
                continue
            argv = make_argv()
            LOG.info("stage %s: i2i %s", name, " ".join(argv))
            started = time.perf_counter()
            try:
                code = resolve(argv[0])(argv[1:])
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - any crash of a stage is reported as that stage's failure
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
            if code:
                raise StageFailed(name, f"exit code {code}")
            seconds = round(time.perf_counter() - started, 2)
            write_marker(self.marker(name), {"stage": name, "argv": argv, "seconds": seconds,
                                             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()})
            summary["stages"][name] = f"done in {seconds}s"
        return summary


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
        return EXIT_LOCKED
    except StageFailed as exc:
        print(f"i2i run: {exc}; earlier outputs and the served index are untouched; rerun to resume")
        return EXIT_STAGE_FAILED
    print(f"i2i run {args.date}: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()))
    return EXIT_OK
