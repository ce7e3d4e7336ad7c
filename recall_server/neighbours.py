"""A cache of each history note's nearest neighbours, so a note seen in an earlier request is not searched again.

A user's history changes by a note or two between requests, and popular notes sit in many users'
histories, so most history notes of a request were searched moments before. A note's unfiltered
top-D neighbours at a given nprobe are a pure function of its vector and the index version, so
they are cached under the vector's own bytes (with nprobe and D), one cache per index version:

- the table stays the source of truth: every request still looks the vectors up, and a
  re-embedded note (a new vector) simply misses;
- each loaded index version has its own cache, dropped with it: a swap starts an empty one, and
  requests still on the old version keep using theirs;
- per-request filters (the history, ``exclude``) are applied to the cached lists afterwards, and
  the server's deeper pass keeps the merge exact (see ``service.RecallService``).

Entries live in two generations of plain dicts: new entries go to the young one; when it holds
half the memory budget it becomes the old one and the previous old one is dropped; a hit in the old
generation moves the entry back to the young one. That keeps recently used notes at O(1) per
lookup without a lock (a lookup racing a generation change can only miss, which is harmless).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

ENTRY_OVERHEAD = 150  # bytes a dict slot and two bytes objects add to an entry's key and value


class NeighbourCache:
    """Unfiltered (scores, labels) rows of one index version, keyed by query vector, nprobe and depth."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._young: dict[bytes, bytes] = {}
        self._old: dict[bytes, bytes] = {}
        self._young_bytes = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    @staticmethod
    def keys(vectors: np.ndarray, nprobe: int, depth: int) -> list[bytes]:
        """One key per row of ``vectors``: the row's float32 bytes, nprobe and depth (exact, no digest)."""
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        width = data.shape[1] * 4
        buffer = data.tobytes()
        suffix = int(nprobe).to_bytes(4, "little") + int(depth).to_bytes(4, "little")
        return [buffer[row * width:(row + 1) * width] + suffix for row in range(data.shape[0])]

    def get(self, keys: list[bytes], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hit rows, their scores (hits, depth) float32, their labels (hits, depth) int64)."""
        young, old = self._young, self._old
        hits, found = [], []
        for row, key in enumerate(keys):
            value = young.get(key)
            if value is None:
                value = old.get(key)
                if value is not None:  # used again: keep it through the next generation change
                    young[key] = value
                    self._young_bytes += len(key) + len(value) + ENTRY_OVERHEAD
            if value is not None:
                hits.append(row)
                found.append(value)
        if not found:
            return np.empty(0, np.int64), np.empty((0, depth), np.float32), np.empty((0, depth), np.int64)
        packed = np.frombuffer(b"".join(found), dtype=np.uint8).reshape(len(found), 12 * depth)
        scores = np.ascontiguousarray(packed[:, :4 * depth]).view(np.float32)
        labels = np.ascontiguousarray(packed[:, 4 * depth:]).view(np.int64)
        self._age(young)
        return np.asarray(hits, dtype=np.int64), scores, labels

    def put(self, keys: list[bytes], scores: np.ndarray, labels: np.ndarray) -> None:
        """Stores rows (scores float32 and labels int64, each (len(keys), depth))."""
        young = self._young
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        added = 0
        for key, score_row, label_row in zip(keys, scores, labels):
            value = score_row.tobytes() + label_row.tobytes()
            young[key] = value
            added += len(key) + len(value) + ENTRY_OVERHEAD
        self._young_bytes += added
        self._age(young)

    def _age(self, young: dict[bytes, bytes]) -> None:
        """The young generation becomes the old one once it holds half the budget."""
        if self._young_bytes >= self.budget_bytes // 2 and young is self._young:
            self._old, self._young, self._young_bytes = young, {}, 0


class NeighbourCaches:
    """One cache per loaded index version, dropped with the version (weakly keyed by it)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def of(self, index: object) -> NeighbourCache:
        """The cache of a loaded index (created on first use)."""
        cache = self._caches.get(index)
        if cache is None:
            with self._lock:
                cache = self._caches.get(index)
                if cache is None:
                    cache = self._caches[index] = NeighbourCache(self.budget_bytes)
        return cache

    def entries(self) -> int:
        return sum(len(cache) for cache in list(self._caches.values()))
