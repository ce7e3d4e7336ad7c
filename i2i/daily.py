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
import fcntl
import json
import logging
import os
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from i2i.errors import EXIT_OK, Failure, I2IError, InputError, TemporaryError, exit_code

LOG = logging.getLogger("i2i.run")


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
        base = path.resolve().parent
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise InputError(f"config {path}: unknown keys {sorted(unknown)}")
        missing = [name for name in ("events", "notes", "runs", "checkpoint", "table", "index_dir") if name not in raw]
        if missing:
            raise InputError(f"config {path}: missing keys {missing}")
        for name in ("events", "notes", "runs", "checkpoint", "index_dir"):
            raw[name] = base / raw[name]
        if raw["table"].startswith("parquet:") and not os.path.isabs(raw["table"][len("parquet:"):]):
            raw["table"] = "parquet:" + str(base / raw["table"][len("parquet:"):])
        if raw.get("deletes") and not os.path.isabs(raw["deletes"]):
            raw["deletes"] = str(base / raw["deletes"])
        return cls(**raw)


@contextmanager
def run_lock(runs: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock; the OS releases it if the process dies."""
    runs.mkdir(parents=True, exist_ok=True)
    handle = open(runs / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LockHeld(f"another i2i run holds {runs / '.lock'}") from None
    try:
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class LockHeld(TemporaryError):
    """Another run holds the lock: retry later."""


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

    def index_argv(self) -> list[str]:
        """build (no index yet), update (same model) or rebuild under the checkpoint's new model version."""
        model_version = self.checkpoint_model_version()
        served = self.served_model_version()
        operation = "build" if served is None else "update" if served == model_version else "rebuild"
        if operation == "rebuild":
            LOG.info("the checkpoint moved to model version %s, the index serves %s: rebuilding the index "
                     "from the new model's embeddings", model_version, served)
        argv = ["index", operation, "--index-dir", str(self.config.index_dir), "--table", self.config.table,
                "--model-version", model_version]
        deletes = self.config.deletes.replace("{date}", self.date.isoformat())
        if deletes and Path(deletes).exists():
            argv += ["--deletes", deletes]
        return argv + self.config.index_args

    def check_index_follows_model(self) -> None:
        """After the index stage: CURRENT must hold the checkpoint's model version."""
        model_version, served = self.checkpoint_model_version(), self.served_model_version()
        if served != model_version:
            raise StageFailed("index", f"the served index holds model version {served!r}, the checkpoint "
                                       f"{model_version!r}: the index would lag the model")

    def run(self, force: bool = False) -> dict:
        from i2i.cli import resolve

        summary: dict = {"date": self.date.isoformat(), "stages": {}}
        for name, make_argv in self.stages():
            if self.marker(name).exists() and not force:
                LOG.info("stage %s: already done for %s, skipped", name, self.date)
                summary["stages"][name] = "skipped (done)"
                continue
            try:
                argv = make_argv()
            except I2IError:
                raise  # bad input or configuration, named as such (exit 2)
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable index directory
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
            LOG.info("stage %s: i2i %s", name, " ".join(argv))
            started = time.perf_counter()
            try:
                code = resolve(argv[0])(argv[1:])
            except I2IError as exc:
                raise StageFailed(name, str(exc), exit_code(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - any crash of a stage is reported as that stage's failure
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
            if code:
                raise StageFailed(name, f"exit code {code}", int(code))
            if name == "index":
                self.check_index_follows_model()
            seconds = round(time.perf_counter() - started, 2)
            write_marker(self.marker(name), {"stage": name, "argv": argv, "seconds": seconds,
                                             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()})
            summary["stages"][name] = f"done in {seconds}s"
        return summary


def write_marker(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="i2i run", description=__doc__,
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
        print(f"i2i run: {exc}; retry later")
        return exit_code(exc)
    except StageFailed as exc:
        advice = {2: "fix the input, then rerun", 75: "retry later"}.get(exc.exit_code, "rerun to resume")
        print(f"i2i run: {exc}; earlier outputs and the served index are untouched; {advice}")
        return exit_code(exc)
    print(f"i2i run {args.date}: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()))
    return EXIT_OK
