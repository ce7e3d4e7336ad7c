"""Input resolution and atomic output publishing through Beam's FileSystems (local, GCS, HDFS...).

A run writes everything into a hidden staging directory beside its output directory and, when
the pipeline has finished, renames it into place: readers see the previous output or the new
one, never a half-written one. On object stores, where a "directory" rename is a copy per
object, ``_SUMMARY.json`` is moved last and marks the output complete.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from i2i.core.errors import InputError

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
GLOB_CHARS = re.compile(r"[*?\[]")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SUMMARY = "_SUMMARY.json"


def is_hidden(path: str, root: str) -> bool:
    """Hidden or bookkeeping files (``.x``, ``_SUCCESS``, staging dirs) below ``root``."""
    relative = path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]
    return any(part.startswith((".", "_")) for part in relative.replace("\\", "/").split("/") if part)


def _match(pattern: str) -> list[str]:
    try:
        results = FileSystems.match([pattern])
    except BeamIOError:
        return []
    return sorted(m.path for m in results[0].metadata_list)


def resolve_files(path: str, suffixes: tuple[str, ...], what: str) -> list[str]:
    """Files of a table given as one file, a directory (searched recursively) or a glob."""
    if GLOB_CHARS.search(path):
        root = path[: GLOB_CHARS.search(path).start()]
        files = [f for f in _match(path) if not is_hidden(f, root)]
    elif path.endswith(suffixes) and FileSystems.exists(path):
        files = [path]
    else:
        root = path.rstrip("/")
        files = [f for f in _match(FileSystems.join(root, "**")) if not is_hidden(f, root)]
        if not files and not FileSystems.exists(path):
            raise InputError(f"{what} not found: {path}")
    if not files:
        raise InputError(f"no {what} files at {path}")
    unsupported = [f for f in files if not f.endswith(suffixes)]
    if unsupported:
        raise InputError(f"unsupported {what} file type: {unsupported[0]} (expected {' or '.join(suffixes)})")
    return files


def resolve_event_files(events: str, date: str | None = None) -> list[str]:
    """Event files for ``--events`` (file, partition, table directory or glob), optionally one ``dt=`` day."""
    if date is not None:
        if not DATE.match(date):
            raise InputError(f"--date must be YYYY-MM-DD, got {date!r}")
        events = FileSystems.join(events.rstrip("/"), f"dt={date}")
    return resolve_files(events, PARQUET_SUFFIXES + JSON_SUFFIXES, "events")


@dataclass(frozen=True)
class RunOutput:
    """The final output directory of one run and the staging directory the pipeline writes to."""

    final: str
    staging: str

    @classmethod
    def for_dir(cls, final: str) -> "RunOutput":
        final = final.rstrip("/")
        parent, name = FileSystems.split(final)
        if not name:
            raise InputError(f"--out must name a directory, got {final!r}")
        return cls(final, FileSystems.join(parent, f".{name}.staging-{uuid.uuid4().hex[:12]}"))

    def staged(self, *parts: str) -> str:
        return FileSystems.join(self.staging, *parts)

    def prepare(self) -> None:
        FileSystems.mkdirs(self.staging)

    @classmethod
    @contextmanager
    def staged_run(cls, final: str) -> Iterator["RunOutput"]:
        """A fresh staging directory for ``final``; removed again if the block fails."""
        output = cls.for_dir(final)
        output.prepare()
        try:
            yield output
        except BaseException:
            output.discard()
            raise

    def take_json(self, name: str) -> dict:
        """Reads a bookkeeping file the pipeline wrote into staging, and removes it from the output."""
        path = self.staged(name)
        data = read_json(path)
        FileSystems.delete([path])
        return data

    def ensure_table(self, name: str, schema: pa.Schema) -> None:
        """Leaves a readable (empty) table behind when the pipeline wrote no file for ``name``."""
        directory = self.staged(name)
        if not _match(FileSystems.join(directory, "*.parquet")):
            write_parquet(FileSystems.join(directory, "part-empty.parquet"), schema.empty_table())

    def publish(self, summary: dict, per_object: bool | None = None) -> None:
        """Writes the summary, then replaces the final directory with the staging one.

        Where directories exist (local, HDFS) that is two renames; on object stores (``gs://``,
        ``s3://``) files are moved one by one, the summary last, as the completion mark.
        """
        with FileSystems.create(self.staged(SUMMARY)) as handle:
            handle.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))
        if per_object is None:
            per_object = FileSystems.get_scheme(self.final) not in (None, "file", "hdfs")
        if per_object:
            self._publish_objects()
            return
        parent, name = FileSystems.split(self.final)
        old = FileSystems.join(parent, f".{name}.old-{uuid.uuid4().hex[:12]}")
        had_previous = FileSystems.exists(self.final)
        if had_previous:
            FileSystems.rename([self.final], [old])
        FileSystems.rename([self.staging], [self.final])
        if had_previous:
            FileSystems.delete([old])
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Deletes staging and moved-aside directories that killed runs of this output left behind
        (on filesystems with directories; object stores expire such prefixes by lifecycle rules).

        Runs into one output directory are serialised by their scheduler (``i2i run`` holds a lock),
        so once this run has published, no other run still writes into them.
        """
        parent, name = FileSystems.split(self.final)
        prefixes = (f".{name}.staging-", f".{name}.old-")
        if FileSystems.get_scheme(self.final) in (None, "file"):  # local matching lists files, not directories
            candidates = [str(path) for path in Path(parent).glob(f".{name}.*-*")]
        else:
            candidates = [path.rstrip("/") for path in _match(FileSystems.join(parent, f".{name}.*-*"))]
        leftovers = [path for path in candidates
                     if FileSystems.split(path)[1].startswith(prefixes) and path != self.staging]
        if leftovers:
            FileSystems.delete(leftovers)

    def _publish_objects(self) -> None:
        previous = _match(FileSystems.join(self.final, "**")) if FileSystems.exists(self.final) else []
        marker = FileSystems.join(self.final, SUMMARY)
        if marker in previous:  # the old output stops counting as complete first
            FileSystems.delete([marker])
            previous.remove(marker)
        if previous:
            FileSystems.delete(previous)
        staged = [f for f in _match(FileSystems.join(self.staging, "**")) if not f.endswith("/" + SUMMARY)]
        destinations = [self.final + f[len(self.staging):] for f in staged]
        if staged:
            FileSystems.rename(staged, destinations)
        FileSystems.rename([self.staged(SUMMARY)], [marker])
        self.discard()

    def discard(self) -> None:
        if FileSystems.exists(self.staging):
            FileSystems.delete([self.staging])


def write_parquet(path: str, table: pa.Table) -> None:
    """One Parquet file through FileSystems (the file is built in memory, then written once)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    with FileSystems.create(path) as handle:
        handle.write(sink.getvalue())


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))
