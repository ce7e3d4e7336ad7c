"""The Parquet embedding table: an append log of part files in one directory, the embedded default.

Layout of ``DIR`` (readable as one dataset by ``pyarrow.dataset.dataset(DIR, format="parquet")``,
every row a valid row of the CONTRACTS.md embeddings table):

    part-<seq>-<uid>.parquet   rows (note_id, embedding, model_version, embedded_at); a larger
                               seq is a later write, and within a file a later row is later
    any other visible file     a part written by another tool (Spark's part-00000-<uuid>-c000.snappy.parquet,
                               say): read as the oldest writes, in name order, before the table's own
                               parts; its embedding column may also be list<float32> of width d
    _lock                      advisory lock held by writers (one writer at a time)
    _delete_journal.json       a delete in progress; replayed by the next writer after a crash

Names starting with "." or "_" are skipped, as ``pyarrow.dataset`` skips them; a subdirectory is
refused with an error that names it rather than read as if absent.

Writes land under a hidden temporary name and are renamed into place, so a crash never leaves a
half-written part. A later row for the same (note_id, model_version) replaces an earlier one;
plain dataset readers see the earlier rows too until ``compact()`` rewrites the table to one row
per key. Deletes rewrite the part files that hold the deleted keys (each file replaced by one
rename), so deleted notes never come back, not even for plain readers.

Every write thus creates, renames or removes an entry of ``DIR``, which changes the directory's
mtime. A reader keeps its rows while that stamp stays put, so a lookup costs one ``stat`` rather
than a listing of the directory (``ParquetEmbeddingTable._signature`` says when the stamp is
trusted).
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedding.table import DimensionMismatch, EmbeddingTable, Lookup, check_vectors
from i2i.core.errors import InputError
from i2i.core.io import atomic_file, atomic_write_text
from i2i.core.locks import exclusive_lock
from i2i.core.schemas import embeddings_schema

PART_PATTERN = re.compile(r"^part-(\d{10})-([0-9a-f]{8})\.parquet$")
FOREIGN_SEQ = 0  # files of other writers sort before every own part (whose seq starts at 1)
HIDDEN_PREFIXES = (".", "_")
LOCK_NAME = "_lock"
JOURNAL_NAME = "_delete_journal.json"
READ_RETRIES = 5
SETTLE_SECONDS = 2.0  # at least the mtime granularity of the filesystems a table lives on (ext3: 1 s, FAT: 2 s)
RELIST_SECONDS = 1.0  # lists at least this often even when the stamp stays put (a foreign file rewritten in place)
ID_SLICE = 16384  # ids made into Python strings per step, so that other threads get the GIL in between


@dataclass(frozen=True)
class Part:
    seq: int
    path: Path
    signature: tuple  # (name, inode, mtime_ns, size): changes whenever the file is replaced


@dataclass(frozen=True)
class Listing:
    """The signature of a directory listing, and whether the directory's stamp can be trusted to show
    any later change.

    A change made in the same clock tick as the stamp's mtime leaves the stamp as it was, and only a
    listing sees it. But once the stamp was seen for ``settle_seconds`` (no less than the
    filesystem's mtime granularity) before a listing, that tick is over: every change after the
    listing gets a later mtime. Measured on the reader's monotonic clock, so a file server's
    skewed clock does not matter.
    """

    stamp: tuple | None  # the directory's (device, inode, mtime_ns) when it was listed
    signature: tuple  # the parts' and the delete journal's (name, inode, mtime_ns, size)
    stamp_seen_at: float  # monotonic time the stamp was first seen
    listed_at: float  # monotonic time of the stat that preceded the listing

    def trusted(self, settle_seconds: float) -> bool:
        return self.listed_at - self.stamp_seen_at >= settle_seconds


@dataclass
class VersionRows:
    """The live rows of one model version, deduplicated (last write wins), in write order."""

    signature: tuple  # the Listing signature the rows were read under
    ids: list[str]
    matrix: np.ndarray  # read-only float32 (n, dim)
    row_of: dict[str, int]


@dataclass
class CompactionReport:
    rows_before: int
    rows_after: int
    parts_before: int
    parts_after: int


def _write_then_rename(table: pa.Table, final: Path) -> None:
    """Writes a hidden temporary file, makes it durable, then renames it over ``final``."""
    with atomic_file(final) as tmp:
        pq.write_table(table, tmp)


def _embedding_width(path: Path) -> int | None:
    """Vector width of one part: the fixed list size, or the length of the first vector of a list column."""
    with open(path, "rb") as handle:  # one open file: a part renamed over this name mid-read is not mixed in
        part = pq.ParquetFile(handle)
        field = part.schema_arrow.field("embedding")
        if pa.types.is_fixed_size_list(field.type):
            return field.type.list_size
        if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)):
            raise InputError(f"{path}: embedding column is {field.type}, not a list of float32")
        column = part.read(columns=["embedding"]).column("embedding").drop_null()
    return len(column[0].as_py()) if len(column) else None


def _conform(table: pa.Table, dim: int, path: Path) -> pa.Table:
    """Casts a part's columns to the contract's types (a foreign writer's list<float32> to fixed_size_list)."""
    schema = embeddings_schema(dim)
    columns = []
    for name in table.column_names:
        column = table.column(name)
        expected = schema.field(name).type if name in schema.names else column.type
        if not column.type.equals(expected):
            try:  # a finer timestamp unit is truncated to the contract's milliseconds
                column = column.cast(expected, safe=not pa.types.is_timestamp(expected))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"embedding table part {path}: column {name} of type {column.type} does not "
                                 f"conform to {expected}: {exc}") from exc
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _string_slices(column: pa.ChunkedArray) -> Iterator[list[str]]:
    """A string column as lists of at most ID_SLICE Python strings: making a million of them in one
    call would hold the GIL, and stall every other thread, for the whole of that call."""
    for chunk in column.chunks:
        for start in range(0, len(chunk), ID_SLICE):
            yield chunk.slice(start, ID_SLICE).to_pylist()


def _matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.float32(), dim))
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(len(column), dim), dtype=np.float32)


class ParquetEmbeddingTable(EmbeddingTable):
    """Embeddings in a directory of Parquet part files; single writer, many readers."""

    def __init__(self, directory: str | os.PathLike, rows_per_file: int = 1_000_000, *,
                 settle_seconds: float = SETTLE_SECONDS, relist_seconds: float = RELIST_SECONDS) -> None:
        self.directory = Path(directory)
        self.url = f"parquet:{directory}"
        self.rows_per_file = rows_per_file
        self.settle_seconds = settle_seconds
        self.relist_seconds = relist_seconds
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"embedding table {self.url}: {self.directory} is not a directory")
        self._cache: dict[str, VersionRows] = {}
        self._cache_lock = threading.Lock()
        self._listing: Listing | None = None

    # ----------------------------------------------------------------- files
    def parts(self) -> list[Part]:
        """Part files in write order."""
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(HIDDEN_PREFIXES):
                continue
            if entry.is_dir():
                raise InputError(f"embedding table {self.url} holds a subdirectory {entry.name!r}; "
                                 "a table's parts are the Parquet files at its top level")
            match = PART_PATTERN.match(entry.name)
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            found.append(Part(int(match.group(1)) if match else FOREIGN_SEQ, Path(entry.path),
                              (entry.name, stat.st_ino, stat.st_mtime_ns, stat.st_size)))
        return sorted(found, key=lambda part: (part.seq, part.path.name))

    def _directory_stamp(self) -> tuple | None:
        """(device, inode, mtime_ns) of the directory: creating, renaming into (also over an existing
        name) or removing an entry updates its mtime (POSIX rename/unlink/creat), replacing the
        directory its inode."""
        try:
            stat = os.stat(self.directory)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_mtime_ns)

    def _list_directory(self) -> tuple[list[Part], tuple]:
        """The parts and the signature of everything a view depends on: the parts and the journal."""
        parts = self.parts()
        try:
            journal = os.stat(self.directory / JOURNAL_NAME)
            pending = (JOURNAL_NAME, journal.st_ino, journal.st_mtime_ns, journal.st_size)
        except FileNotFoundError:
            pending = None
        return parts, tuple(part.signature for part in parts) + (pending,)

    def _signature(self) -> tuple:
        """The current listing signature, listing the directory only when its stamp may hide a change:
        one stat per call while the table stays as it is."""
        now = time.monotonic()
        stamp = self._directory_stamp()
        known = self._listing
        if (known is not None and known.stamp == stamp and known.trusted(self.settle_seconds)
                and now - known.listed_at < self.relist_seconds):
            return known.signature
        _, signature = self._list_directory()
        seen_at = known.stamp_seen_at if known is not None and known.stamp == stamp else now
        self._listing = Listing(stamp, signature, seen_at, now)
        return signature

    def _read_part(self, path: Path, columns: list[str] | None = None, filters=None) -> pa.Table:
        """One part's rows in the contract's types; an unreadable part is an error that names it."""
        try:
            # one open file for footer and pages: a writer renaming a new part over this name between
            # the two reads would otherwise hand the old footer's offsets to the new file's bytes
            with open(path, "rb") as handle:
                table = pq.read_table(handle, columns=columns, filters=filters)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"embedding table {self.url}: cannot read part {path.name}: {exc}") from exc
        dim = None
        if "embedding" in table.column_names:
            dim = self.dim()
            if dim is None and table.column("embedding").null_count < table.num_rows:
                raise FileNotFoundError(path)  # these rows have vectors, so the parts were replaced since: list again
        return _conform(table, dim or 1, path)

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Holds the directory's writer lock and finishes any delete a crash interrupted."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.directory / LOCK_NAME):
            self._replay_journal()
            yield

    def _write_part(self, table: pa.Table, seq: int) -> Path:
        final = self.directory / f"part-{seq:010d}-{uuid.uuid4().hex[:8]}.parquet"
        _write_then_rename(table, final)
        return final

    def _replace_part(self, path: Path, table: pa.Table) -> None:
        """Replaces one part file's rows in a single rename (or removes it when nothing is left)."""
        if table.num_rows == 0:
            path.unlink(missing_ok=True)
            return
        _write_then_rename(table, path)

    def _read_parts(self, columns: list[str], model_version: str | None) -> tuple[tuple, list[pa.Table]]:
        """Reads every part (retrying when a concurrent writer replaced one under us), with the listing
        signature taken before the reads: a change during them makes the next signature differ."""
        for attempt in range(READ_RETRIES):
            parts, signature = self._list_directory()
            tables = []
            try:
                for part in parts:
                    filters = pc.field("model_version") == model_version if model_version is not None else None
                    tables.append(self._read_part(part.path, columns=columns, filters=filters))
            except FileNotFoundError:
                time.sleep(0.01 * (attempt + 1))
                continue
            return signature, tables
        raise InputError(f"embedding table {self.url} keeps changing under the reader; retry later")

    # ----------------------------------------------------------------- reads
    def dim(self) -> int | None:
        """Width of the table's vectors (one width per table, so it stays one dataset), None when empty."""
        for part in self.parts():
            try:
                width = _embedding_width(part.path)
            except FileNotFoundError:
                continue
            except (pa.ArrowInvalid, OSError, KeyError) as exc:
                raise InputError(f"embedding table {self.url}: cannot read part {part.path.name}: {exc}") from exc
            if width is not None:
                return width
        return None

    def _pending_deletes(self) -> dict[str, set[str]]:
        try:
            entry = json.loads((self.directory / JOURNAL_NAME).read_text())
        except FileNotFoundError:
            return {}
        return {entry["model_version"]: set(entry["note_ids"])}

    def _current(self, model_version: str) -> VersionRows | None:
        """The cached rows of a model version when the table has not changed since they were read."""
        signature = self._signature()
        cached = self._cache.get(model_version)
        return cached if cached is not None and cached.signature == signature else None

    def _rows(self, model_version: str) -> VersionRows:
        rows = self._current(model_version)
        if rows is not None:
            return rows
        with self._cache_lock:  # one reader reads the table; the others wait for its rows
            rows = self._current(model_version)
            if rows is None:
                rows = self._cache[model_version] = self._read_rows(model_version)
            return rows

    def _read_rows(self, model_version: str) -> VersionRows:
        """The live rows of a model version from the part files (last write wins, pending deletes gone)."""
        signature, tables = self._read_parts(["note_id", "embedding"], model_version)
        # the width of the rows read (a second look at the directory could find their parts replaced)
        dim = tables[0].schema.field("embedding").type.list_size if tables else (self.dim() or 0)
        if tables:
            combined = pa.concat_tables(tables)
        else:
            combined = pa.table({"note_id": pa.array([], pa.string()),
                                 "embedding": pa.array([], pa.list_(pa.float32(), max(dim, 1)))})
        combined = combined.append_column("_row", pa.array(np.arange(combined.num_rows, dtype=np.int64)))
        last = combined.group_by("note_id", use_threads=False).aggregate([("_row", "max")])
        keep = np.sort(last.column("_row_max").to_numpy())
        live = combined.take(pa.array(keep))
        ids: list[str] = []
        for part in _string_slices(live.column("note_id")):
            ids.extend(part)
        matrix = _matrix(live.column("embedding"), dim) if dim else np.zeros((0, 0), np.float32)
        deleted = self._pending_deletes().get(model_version)
        if deleted:
            mask = np.array([note_id not in deleted for note_id in ids], dtype=bool)
            ids = [note_id for note_id, kept in zip(ids, mask) if kept]
            matrix = matrix[mask]
        matrix.setflags(write=False)
        return VersionRows(signature, ids, matrix, {note_id: i for i, note_id in enumerate(ids)})

    def model_versions(self) -> list[str]:
        _, tables = self._read_parts(["model_version"], None)
        present: set[str] = set()
        for table in tables:
            present.update(v for v in pc.unique(table.column("model_version")).to_pylist())
        for model_version in self._pending_deletes():
            if model_version in present and not self._rows(model_version).ids:
                present.discard(model_version)
        return sorted(present)

    def get_many(self, note_ids: Sequence[str], model_version: str) -> Lookup:
        rows = self._rows(model_version)
        if not rows.ids:
            self.refuse_other_versions(model_version)
        row_of = rows.row_of
        found, positions, missing = [], [], []
        for note_id in note_ids:
            position = row_of.get(note_id)
            if position is None:
                missing.append(note_id)
            else:
                found.append(note_id)
                positions.append(position)
        if found:
            vectors = rows.matrix[positions]
        else:
            vectors = np.zeros((0, rows.matrix.shape[1]), np.float32)
        return Lookup(found, vectors, missing)

    def scan(self, model_version: str, batch_size: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        rows = self._rows(model_version)
        for start in range(0, len(rows.ids), batch_size):
            yield rows.ids[start:start + batch_size], rows.matrix[start:start + batch_size].copy()

    def count(self, model_version: str) -> int:
        return len(self._rows(model_version).ids)

    def newest_embedded_at(self, model_version: str, not_after: float | None = None) -> float | None:
        """Newest ``embedded_at`` (Unix seconds) of a model version's rows, optionally no later than
        ``not_after``; None when there are none. Reads only that column."""
        _, tables = self._read_parts(["embedded_at"], model_version)
        newest = None
        for table in tables:
            column = pc.cast(table.column("embedded_at"), pa.int64())
            if not_after is not None:
                column = pc.filter(column, pc.less_equal(column, int(not_after * 1000)))
            value = pc.max(column).as_py() if len(column) else None
            if value is not None and (newest is None or value > newest):
                newest = value
        return None if newest is None else newest / 1000.0

    def has_ids(self, model_version: str) -> set[str]:
        """Ids embedded under a model version: the ids of the cached rows while they are current (the
        recall server keeps them), else read from the id column alone. The set is filled a slice at
        a time (see ``_string_slices``)."""
        present: set[str] = set()
        rows = self._current(model_version)
        if rows is not None:
            for start in range(0, len(rows.ids), ID_SLICE):
                present.update(rows.ids[start:start + ID_SLICE])
            return present
        _, tables = self._read_parts(["note_id"], model_version)
        for table in tables:
            for ids in _string_slices(table.column("note_id")):
                present.update(ids)
        present.difference_update(self._pending_deletes().get(model_version, ()))
        return present

    # ----------------------------------------------------------------- writes
    def put_many(self, note_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> None:
        note_ids = list(note_ids)
        matrix = check_vectors(note_ids, vectors)
        if not isinstance(model_version, str) or not model_version.strip():
            raise InputError(f"model version {model_version!r} is not a non-empty string")
        if not note_ids:
            return
        dim = matrix.shape[1]
        with self._writer():
            existing = self.dim()
            if existing is not None and existing != dim:
                raise DimensionMismatch(
                    f"embedding table {self.url} holds {existing}-dimensional vectors, got {dim}: "
                    "write another model's embeddings to another table")
            now_ms = np.full(len(note_ids), int(time.time() * 1000), dtype=np.int64)
            table = pa.table(
                {
                    "note_id": pa.array(note_ids, pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim),
                    "model_version": pa.array([model_version] * len(note_ids), pa.string()),
                    "embedded_at": pa.array(now_ms, pa.timestamp("ms", tz="UTC")),
                },
                schema=embeddings_schema(dim),
            )
            parts = self.parts()
            self._write_part(table, (parts[-1].seq + 1) if parts else 1)

    def delete_many(self, note_ids: Sequence[str], model_version: str) -> int:
        wanted = set(note_ids)
        if not wanted or not self.directory.exists():
            return 0
        with self._writer():
            existed = len(wanted & self.has_ids(model_version))
            if not existed:
                return 0
            atomic_write_text(self.directory / JOURNAL_NAME,
                              json.dumps({"model_version": model_version, "note_ids": sorted(wanted)}))
            self._replay_journal()
        return existed

    def _replay_journal(self) -> None:
        """Removes the journal's keys from every part file, then the journal (idempotent)."""
        journal = self.directory / JOURNAL_NAME
        pending = self._pending_deletes()
        for model_version, deleted in pending.items():
            value_set = pa.array(sorted(deleted), pa.string())
            for part in self.parts():
                table = self._read_part(part.path)
                doomed = pc.and_(pc.equal(table.column("model_version"), model_version),
                                 pc.is_in(table.column("note_id"), value_set=value_set))
                if pc.any(doomed).as_py():
                    self._replace_part(part.path, table.filter(pc.invert(doomed)))
        if pending:
            journal.unlink(missing_ok=True)

    def compact(self) -> CompactionReport:
        """Rewrites the table to one row per (note_id, model_version), keeping the latest rows.

        The compacted parts get a later seq than every old part before the old ones are
        removed, so a reader (or a crash) at any moment sees the same live rows.
        """
        with self._writer():
            parts = self.parts()
            tables = [self._read_part(part.path) for part in parts]
            if not tables:
                return CompactionReport(0, 0, 0, 0)
            combined = pa.concat_tables(tables)
            rows_before = combined.num_rows
            combined = combined.append_column("_row", pa.array(np.arange(rows_before, dtype=np.int64)))
            last = combined.group_by(["model_version", "note_id"], use_threads=False).aggregate([("_row", "max")])
            live = combined.take(last.column("_row_max")).drop_columns(["_row"])
            live = live.sort_by([("model_version", "ascending"), ("note_id", "ascending")])
            if len(parts) == 1 and live.num_rows == rows_before:
                return CompactionReport(rows_before, rows_before, 1, 1)
            seq = parts[-1].seq + 1
            written = 0
            for start in range(0, live.num_rows, self.rows_per_file):
                self._write_part(live.slice(start, self.rows_per_file), seq)
                written += 1
            for part in parts:
                part.path.unlink(missing_ok=True)
            return CompactionReport(rows_before, live.num_rows, len(parts), written)

