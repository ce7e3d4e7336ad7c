"""The coarse assignment of an IVF index with a flat quantizer, as one BLAS product.

Scoring a request's 50 queries against 4,096 centroids is a (50 x 64) x (64 x 4,096) product. FAISS
runs it through the OpenBLAS build bundled with faiss-cpu, which on this kind of CPU takes about
1.3 ms; numpy's own BLAS does it in about 0.4 ms on one thread, and the few best lists of each row
are picked with a handful of argmax passes (or one partition for large nprobe). The lists and
scores are the ones FAISS's quantizer returns, so ``IndexIVF.search_preassigned`` scans them as it
would scan its own.
"""
from __future__ import annotations

import faiss
import numpy as np

ARGMAX_UP_TO = 16  # up to this nprobe, repeated argmax passes beat a partition of every row


class FlatCoarse:
    """Nearest centroids of a flat (inner-product or L2) quantizer, best first."""

    def __init__(self, quantizer: faiss.IndexFlat) -> None:
        count, dim = int(quantizer.ntotal), int(quantizer.d)
        centroids = np.array(faiss.rev_swig_ptr(quantizer.get_xb(), count * dim), dtype=np.float32).reshape(count, dim)
        self.transposed = np.ascontiguousarray(centroids.T)
        self.l2 = quantizer.metric_type == faiss.METRIC_L2
        # L2: the nearest centroid maximises q.c - |c|^2 / 2, so one product ranks both metrics.
        self.half_norms = 0.5 * (centroids * centroids).sum(axis=1) if self.l2 else None

    def search(self, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, lists), each (n, nprobe): inner products (higher first) or squared L2 distances
        (lower first), exactly what ``IndexFlat.search`` would return for these queries."""
        scores = queries @ self.transposed
        if self.l2:
            scores -= self.half_norms
        lists, best = top_columns(scores, min(nprobe, scores.shape[1]))
        if self.l2:
            best = (queries * queries).sum(axis=1, keepdims=True) - 2.0 * best
        return best.astype(np.float32, copy=False), lists


def top_columns(scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, values) of the ``count`` largest entries of each row, largest first. Overwrites ``scores``."""
    rows = np.arange(scores.shape[0])
    if count <= ARGMAX_UP_TO:
        columns = np.empty((scores.shape[0], count), dtype=np.int64)
        values = np.empty((scores.shape[0], count), dtype=scores.dtype)
        for j in range(count):
            best = scores.argmax(axis=1)
            columns[:, j] = best
            values[:, j] = scores[rows, best]
            scores[rows, best] = -np.inf
        return columns, values
    part = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    part_values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_values, order, axis=1)
