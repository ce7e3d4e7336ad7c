"""The searches of one request's history notes, in passes that keep the merged top k exact.

A ``max`` merge of 50 history notes takes about 4 notes from each for k = 200, yet a FAISS search
pays for k-deep result heaps on every query. So the first pass fetches a shallow list per note
(``max(32, 2 k / notes)``), and only the rows whose unseen neighbours could still reach the merged
top k are searched again at the full depth (``per_query_k``). Any neighbour a row did not return
scores at most the last one it returned, so a row whose last (weighted) score is below the k-th
merged score, or whose list is short (its probed lists hold no more), cannot change the result.

Filters (the history, ``exclude``, ``published_after``) run inside the scan as an IDSelector, or,
for lists from the neighbour cache (which are unfiltered, so they serve every request), afterwards.
A row that lost entries to a filter applied afterwards may hold fewer than its depth of accepted
notes; if it could still reach the top k at full depth it is searched once more with the filters
inside the scan, which returns its best ``per_query_k`` accepted notes, as without the cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recall_server.filters import members
from recall_server.merge import Merged, merge
from recall_server.metrics import RecallMetrics
from recall_server.neighbours import NeighbourCache

SHALLOW_MIN = 32


def shallow_depth(k: int, per_query_k: int, rows: int, strategy: str) -> int:
    """Neighbours fetched per history note on the first pass (``per_query_k`` unless ``max`` merging)."""
    if strategy != "max" or rows <= 1:
        return per_query_k
    return min(per_query_k, max(SHALLOW_MIN, -(-2 * k // rows)))


@dataclass
class Rows:
    """One pass's neighbours of some history notes, and what bounds the neighbours it did not return."""

    scores: np.ndarray  # (n, depth) float32, best first; -inf where none or filtered out
    labels: np.ndarray  # (n, depth) int64; -1 where none or filtered out
    last: np.ndarray  # (n,) last score before filtering: no unseen neighbour scores higher
    full: np.ndarray  # (n,) bool: `depth` neighbours before filtering (the probed lists may hold more)
    lost: np.ndarray  # (n,) bool: a filter applied after the search removed some of them

    @classmethod
    def filtered_in_scan(cls, scores: np.ndarray, labels: np.ndarray) -> "Rows":
        return cls(scores, labels, scores[:, -1].copy(), labels[:, -1] >= 0, np.zeros(len(scores), dtype=bool))


@dataclass
class HistorySearch:
    """Searches and merges the history notes of one request over one loaded index version."""

    index: object  # index.search.LoadedIndex
    queries: np.ndarray  # prepared (normalised) history vectors
    nprobe: int
    selector: object  # the request's FAISS IDSelector, or None
    excluded: np.ndarray  # labels left out (history, exclude); applied afterwards to cached lists
    cache: NeighbourCache | None  # None: every pass filters inside the scan
    per_note: bool  # one FAISS call per history note (the naive baseline)
    metrics: RecallMetrics
    cpu: dict[str, float]
    _probe: object = field(default=None, init=False)  # index.search.Probe of every row, once computed

    def run(self, k: int, per_query_k: int, strategy: str, weights: np.ndarray) -> Merged:
        depth = shallow_depth(k, per_query_k, len(self.queries), strategy)
        everything = np.arange(len(self.queries))
        rows = self._fetch(everything, depth, cached=self.cache is not None)
        started = time.thread_time()
        merged = merge(rows.labels, rows.scores, rows.labels >= 0, strategy, k, weights)
        while True:
            pending = self._pending(rows, depth, per_query_k, weights, merged, k)
            if not pending.size:
                break
            self.metrics.deeper_searches.inc(int(pending.size))
            self._add_cpu("merge", started)
            # Deeper from the cache first; rows that lost entries at full depth go through the scan's filters.
            cached = self.cache is not None and depth < per_query_k
            deeper = self._fetch(pending, per_query_k, cached=cached)
            started = time.thread_time()
            if depth < per_query_k:
                rows, depth = widen(rows, per_query_k), per_query_k
            for name in ("scores", "labels", "last", "full", "lost"):
                getattr(rows, name)[pending] = getattr(deeper, name)
            merged = merge(rows.labels, rows.scores, rows.labels >= 0, strategy, k, weights)
        self._add_cpu("merge", started)
        return merged

    @staticmethod
    def _pending(rows: Rows, depth: int, per_query_k: int, weights: np.ndarray, merged: Merged, k: int) -> np.ndarray:
        """Rows whose unseen neighbours could still enter the merged top k."""
        threshold = merged.scores[k - 1] if len(merged) >= k else -np.inf
        could = rows.full & (rows.last * weights >= threshold)
        if depth >= per_query_k:
            could &= rows.lost  # at full depth only a filter applied afterwards can hide an accepted note
        return np.flatnonzero(could)

    def _fetch(self, which: np.ndarray, depth: int, cached: bool) -> Rows:
        if not cached:
            scores, labels = self._scan(which, depth, self.selector)
            return Rows.filtered_in_scan(scores, labels)
        started = time.thread_time()
        keys = self.cache.keys(self.queries[which], self.nprobe, depth)
        hits, hit_scores, hit_labels = self.cache.get(keys, depth)
        scores = np.empty((len(which), depth), dtype=np.float32)
        labels = np.empty((len(which), depth), dtype=np.int64)
        scores[hits], labels[hits] = hit_scores, hit_labels
        missing = np.ones(len(which), dtype=bool)
        missing[hits] = False
        misses = np.flatnonzero(missing)
        self._add_cpu("cache", started)
        if misses.size:
            found_scores, found_labels = self._scan(which[misses], depth, None)
            started = time.thread_time()
            scores[misses], labels[misses] = found_scores, found_labels
            self.cache.put([keys[row] for row in misses], found_scores, found_labels)
            self._add_cpu("cache", started)
        started = time.thread_time()
        self.metrics.neighbour_cache(int(hits.size), int(misses.size))
        rows = Rows(scores, labels, scores[:, -1].copy(), labels[:, -1] >= 0, np.zeros(len(which), dtype=bool))
        if self.excluded.size:
            dropped = members(labels, self.excluded)
            rows.lost = dropped.any(axis=1)
            labels[dropped], scores[dropped] = -1, -np.inf
        self._add_cpu("cache", started)
        return rows

    def _scan(self, which: np.ndarray, depth: int, selector) -> tuple[np.ndarray, np.ndarray]:
        """FAISS searches of some rows (one batched call, or one per row in ``per_note`` mode)."""
        index, cpu = self.index, self.cpu
        if not self.per_note:
            if self._probe is not None:  # a deeper pass: the first pass's lists, not a second assignment
                probe = self._probe.rows(which)
            else:
                probe = index.probe(self.queries[which], self.nprobe, cpu, prepared=True)
                if len(which) == len(self.queries):
                    self._probe = probe
            return index.search_probe(probe, depth, selector=selector, timings=cpu)
        parts = [index.search_probe(index.probe(self.queries[row:row + 1], self.nprobe, cpu, prepared=True), depth,
                                    selector=selector, timings=cpu)
                 for row in which]
        return np.vstack([scores for scores, _ in parts]), np.vstack([labels for _, labels in parts])

    def _add_cpu(self, stage: str, started: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.thread_time() - started


def widen(rows: Rows, width: int) -> Rows:
    """Rows padded on the right to ``width`` columns (score -inf, label -1)."""
    scores = np.full((rows.scores.shape[0], width), -np.inf, dtype=np.float32)
    labels = np.full((rows.labels.shape[0], width), -1, dtype=np.int64)
    scores[:, :rows.scores.shape[1]], labels[:, :rows.labels.shape[1]] = rows.scores, rows.labels
    return Rows(scores, labels, rows.last.copy(), rows.full.copy(), rows.lost.copy())
