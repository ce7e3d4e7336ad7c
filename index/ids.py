"""int64 id <-> note_id mapping of one index version.

Ids are handed out in order from a counter that only grows (``next_id``), so two notes can never
share an id, a removed id is never reused by another note, and the id doubles as the row of a
dense lookup array: mapping search results back to note ids is one array index, no hashing.
A re-embedded note keeps its id. Each live id also carries a 64-bit fingerprint of the embedding
it was indexed with, which is how an update recognises re-embedded notes without re-reading the
index's (possibly lossy) codes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa

IDS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("fingerprint", pa.uint64(), nullable=False),
        # When the note was published (ms since the epoch, UTC); null = not known. Optional on read.
        pa.field("published_ms", pa.int64(), nullable=True),
    ]
)
UNKNOWN_TIME = np.iinfo(np.int64).min  # published_ms of a note whose publication time is not known

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


class IdMapError(ValueError):
    """An id mapping that is not one-to-one (a corrupt or hand-edited ids.parquet)."""


def vector_fingerprints(vectors: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a-style hash of each row's float32 bytes (vectorised over rows)."""
    words = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    hashes = np.full(words.shape[0], _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(words.shape[1]):
            hashes ^= words[:, column]
            hashes *= _FNV_PRIME
    return hashes


@dataclass
class IdMap:
    """Live ids of an index, with their note ids and embedding fingerprints."""

    next_id: int = 0
    # Dense arrays indexed by id (length next_id); None / 0 where the id is not live.
    _note_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    _fingerprints: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    _by_note: dict[str, int] = field(default_factory=dict)
    _published_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_arrow(cls, table: pa.Table, next_id: int | None = None) -> "IdMap":
        ids = table.column("id").to_numpy().astype(np.int64, copy=False)
        note_ids = table.column("note_id").to_pylist()
        fingerprints = table.column("fingerprint").to_numpy().astype(np.uint64, copy=False)
        if ids.size and ids.min() < 0:
            raise IdMapError("ids.parquet holds a negative id")
        size = int(ids.max()) + 1 if ids.size else 0
        next_id = size if next_id is None else next_id
        if size > next_id:
            raise IdMapError(f"ids.parquet holds id {size - 1} at or above next_id {next_id}")
        if np.unique(ids).size != ids.size:
            raise IdMapError("ids.parquet maps one int64 id to several note ids")
        by_note = dict(zip(note_ids, ids.tolist()))
        if len(by_note) != len(note_ids):
            raise IdMapError("ids.parquet maps one note id to several int64 ids")
        mapping = cls(next_id=next_id)
        mapping._note_ids = np.full(next_id, None, dtype=object)
        mapping._note_ids[ids] = np.array(note_ids, dtype=object)
        mapping._fingerprints = np.zeros(next_id, dtype=np.uint64)
        mapping._fingerprints[ids] = fingerprints
        mapping._by_note = by_note
        mapping._published_ms = np.full(next_id, UNKNOWN_TIME, dtype=np.int64)
        if "published_ms" in table.column_names:
            published = table.column("published_ms").to_numpy(zero_copy_only=False)
            published = np.where(np.isnan(published), UNKNOWN_TIME, published) if published.dtype.kind == "f" \
                else published
            mapping._published_ms[ids] = np.asarray(published, dtype=np.int64)
        return mapping

    def to_arrow(self) -> pa.Table:
        ids = self.live_ids()
        return pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "note_id": pa.array(self._note_ids[ids].tolist(), pa.string()),
                "fingerprint": pa.array(self._fingerprints[ids], pa.uint64()),
                "published_ms": pa.array(self._published_ms[ids], pa.int64(),
                                         mask=self._published_ms[ids] == UNKNOWN_TIME),
            },
            schema=IDS_SCHEMA,
        )

    def copy(self) -> "IdMap":
        return IdMap(self.next_id, self._note_ids.copy(), self._fingerprints.copy(), dict(self._by_note),
                     self._published_ms.copy())

    # ---- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_note)

    def __contains__(self, note_id: str) -> bool:
        return note_id in self._by_note

    def live_ids(self) -> np.ndarray:
        return np.sort(np.fromiter(self._by_note.values(), dtype=np.int64, count=len(self._by_note)))

    def note_ids(self) -> list[str]:
        return list(self._by_note)

    def id_of(self, note_id: str) -> int | None:
        return self._by_note.get(note_id)

    def ids_of(self, note_ids: Sequence[str]) -> np.ndarray:
        """Ids of notes that must all be present."""
        return np.array([self._by_note[n] for n in note_ids], dtype=np.int64)

    def lookup(self, note_ids: Sequence[str]) -> np.ndarray:
        """Ids of notes, -1 for notes without one."""
        get = self._by_note.get
        return np.fromiter((get(n, -1) for n in note_ids), dtype=np.int64, count=len(note_ids))

    def fingerprint_of(self, ids: np.ndarray) -> np.ndarray:
        return self._fingerprints[ids]

    def published_ms(self) -> np.ndarray:
        """Publication time (ms) of every id, indexed by id; UNKNOWN_TIME where not known or not live."""
        return self._published_ms

    def publish_times(self) -> dict[str, int]:
        """note_id -> published ms of every live note whose time is known (carried over by a rebuild)."""
        return {n: int(self._published_ms[i]) for n, i in self._by_note.items()
                if self._published_ms[i] != UNKNOWN_TIME}

    def published_count(self) -> int:
        return int((self._published_ms != UNKNOWN_TIME).sum())

    def note_ids_of(self, labels: np.ndarray) -> np.ndarray:
        """Maps an array of ids (any shape; -1 = none) to an object array of note ids (None = none)."""
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full(labels.shape, None, dtype=object)
        valid = (labels >= 0) & (labels < self.next_id)
        out[valid] = self._note_ids[labels[valid]]
        return out

    # ---- changes ------------------------------------------------------------------------
    def assign(self, note_ids: Sequence[str], fingerprints: np.ndarray) -> np.ndarray:
        """Gives each new note the next free id; a note that already has an id is refused."""
        clash = [n for n in note_ids if n in self._by_note]
        if clash:
            raise IdMapError(f"note ids already mapped: {clash[:5]}")
        if len(set(note_ids)) != len(note_ids):
            raise IdMapError("the same note id was given twice")
        start, count = self.next_id, len(note_ids)
        ids = np.arange(start, start + count, dtype=np.int64)
        self.next_id = start + count
        self._note_ids = np.concatenate([self._note_ids, np.array(list(note_ids), dtype=object)])
        self._fingerprints = np.concatenate([self._fingerprints, np.asarray(fingerprints, dtype=np.uint64)])
        self._published_ms = np.concatenate([self._published_ms, np.full(count, UNKNOWN_TIME, dtype=np.int64)])
        self._by_note.update(zip(note_ids, ids.tolist()))
        return ids

    def set_published(self, times_ms: dict[str, int]) -> int:
        """Records publication times of mapped notes (others are ignored); returns how many were set."""
        pairs = [(self._by_note[n], t) for n, t in times_ms.items() if n in self._by_note]
        if pairs:
            ids, times = zip(*pairs)
            self._published_ms[np.asarray(ids, dtype=np.int64)] = np.asarray(times, dtype=np.int64)
        return len(pairs)

    def refingerprint(self, ids: np.ndarray, fingerprints: np.ndarray) -> None:
        """Records the new embedding of re-embedded notes (they keep their id)."""
        self._fingerprints[ids] = fingerprints

    def remove(self, note_ids: Sequence[str]) -> np.ndarray:
        """Forgets notes; returns the ids they had (absent notes are skipped)."""
        ids = [self._by_note.pop(n) for n in note_ids if n in self._by_note]
        ids_array = np.array(ids, dtype=np.int64)
        self._note_ids[ids_array] = None
        self._fingerprints[ids_array] = 0
        self._published_ms[ids_array] = UNKNOWN_TIME
        return ids_array
