"""Embeddings to index: read from an embedding table (or given as arrays), checked, one model version.

Rows that cannot be indexed (NaN/inf values, a zero vector under inner product) are not dropped
silently: they become dead-letter records, counted in the summary and stored with the version.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from i2i.core.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Unique note ids with their float32 vectors, all of one model version."""

    note_ids: list[str]
    vectors: np.ndarray
    model_version: str
    dead_letter: list[dict] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.note_ids)

    def without(self, excluded: set[str]) -> "Embeddings":
        if not excluded:
            return self
        keep = np.array([n not in excluded for n in self.note_ids], dtype=bool)
        return Embeddings([n for n, k in zip(self.note_ids, keep) if k], self.vectors[keep],
                          self.model_version, self.dead_letter)


def choose_model_version(available: list[str], requested: str | None, url: str) -> str:
    """The requested model version, or the only one in the table; several without a choice is an error."""
    if requested is not None:
        if requested not in available:
            raise InputError(f"embedding table {url} has no embeddings for model version {requested!r} "
                             f"(it holds {available or 'none'})")
        return requested
    if not available:
        raise InputError(f"embedding table {url} holds no embeddings")
    if len(available) > 1:
        raise InputError(f"embedding table {url} holds several model versions {sorted(available)}: "
                         "choose one with --model-version (an index never mixes model versions)")
    return available[0]


def from_arrays(note_ids: list[str], vectors: np.ndarray, model_version: str, require_norm: bool = True,
                source: str = "arrays") -> Embeddings:
    """Checks rows, keeps the last row of a repeated note id, and dead-letters unusable rows."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(note_ids):
        raise InputError(f"expected {len(note_ids)} vectors in a 2-d array, got shape {vectors.shape}")
    last_row = {note_id: row for row, note_id in enumerate(note_ids)}
    if len(last_row) != len(note_ids):
        rows = np.fromiter(last_row.values(), dtype=np.int64, count=len(last_row))
        rows.sort()
        note_ids, vectors = [note_ids[r] for r in rows], vectors[rows]
    finite = np.isfinite(vectors).all(axis=1)
    usable = finite & (np.abs(vectors).sum(axis=1) > 0) if require_norm else finite
    dead = []
    for row in np.flatnonzero(~usable):
        reason = "embedding has NaN or infinite values" if not finite[row] else "embedding is all zeros"
        dead.append({"raw": json.dumps({"note_id": note_ids[row], "model_version": model_version}),
                     "reason": reason, "source": source})
    if dead:
        log.warning("%d embeddings cannot be indexed (first: %s)", len(dead), dead[0]["raw"])
        note_ids = [n for n, ok in zip(note_ids, usable) if ok]
        vectors = vectors[usable]
    return Embeddings(list(note_ids), np.ascontiguousarray(vectors), model_version, dead)


def read_table(url: str, model_version: str | None, require_norm: bool = True,
               batch_size: int = 65536) -> Embeddings:
    """Scans every embedding of one model version from a TABLE url (parquet:DIR or redis://...)."""
    from embedding.table import open_table

    with open_table(url) as table:
        chosen = choose_model_version(table.model_versions(), model_version, url)
        total = table.count(chosen)
        ids: list[str] = []
        chunks: list[np.ndarray] = []
        with tqdm(total=total, desc=f"scan {chosen}", unit="emb", disable=total < 100_000) as progress:
            for batch_ids, batch_vectors in table.scan(chosen, batch_size=batch_size):
                ids.extend(batch_ids)
                chunks.append(np.asarray(batch_vectors, dtype=np.float32))
                progress.update(len(batch_ids))
    if not ids:
        raise InputError(f"embedding table {url} has no embeddings for model version {chosen!r}")
    dims = {chunk.shape[1] for chunk in chunks if chunk.size}
    if len(dims) > 1:
        raise InputError(f"embedding table {url} mixes dimensions {sorted(dims)} under model version {chosen!r}")
    return from_arrays(ids, np.concatenate(chunks), chosen, require_norm=require_norm, source=url)


def read_deletes(path: str | Path) -> list[str]:
    """Note ids to delete: a Parquet table (file or directory) with a note_id column, or a text file
    with one note id per line (blank lines and lines starting with '#' are ignored)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"deletes file not found: {path}")
    if path.is_dir() or path.suffix == ".parquet":
        from i2i.core.io import read_table as read_parquet

        table = read_parquet(path)
        if "note_id" not in table.column_names:
            raise InputError(f"deletes table {path} has no note_id column (columns: {table.column_names})")
        column = table.column("note_id")
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise InputError(f"deletes table {path}: note_id must be a string column, got {column.type}")
        return [n for n in column.to_pylist() if n]
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"deletes file {path} is neither Parquet nor UTF-8 text: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_publish_times(path: str | Path) -> dict[str, int]:
    """note_id -> published_at (ms, UTC) from a notes table (CONTRACTS.md ``notes``), for ``published_after``.

    Rows without a publication time are left out (their notes are never "fresh"); a repeated note
    id keeps its earliest time.
    """
    import pyarrow.compute as pc

    from i2i.core.io import read_table as read_parquet

    table = read_parquet(path, columns=None)
    missing = [name for name in ("note_id", "published_at") if name not in table.column_names]
    if missing:
        raise InputError(f"notes table {path} lacks {', '.join(missing)} (columns: {table.column_names})")
    published = table.column("published_at")
    if not pa.types.is_timestamp(published.type):
        raise InputError(f"notes table {path}: published_at must be a timestamp, got {published.type}")
    millis = pc.cast(pc.cast(published, pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
    times: dict[str, int] = {}
    for note_id, ms in zip(table.column("note_id").to_pylist(), millis):
        if note_id and ms is not None and (note_id not in times or ms < times[note_id]):
            times[note_id] = ms
    return times
