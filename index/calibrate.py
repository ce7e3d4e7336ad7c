"""Choosing an index's default nprobe for a target recall, measured on the index itself at build time.

A sample of the indexed vectors is searched exactly (numpy, blocks of the corpus) and through the
index at growing nprobe; the default is the smallest nprobe whose mean recall@k reaches the target.
A fixed default either wastes CPU on easy data (tight clusters need 2-4 lists) or loses recall on
hard data, and the recall server's cost grows almost linearly with nprobe.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faiss
import numpy as np

from index.search import exact_rerank, search_parameters

log = logging.getLogger(__name__)

CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
BLOCK = 65536


@dataclass
class Calibration:
    nprobe: int
    target: float
    k: int
    queries: int
    recall_by_nprobe: dict[int, float] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.recall_by_nprobe.get(self.nprobe, float("nan"))


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Row indices of the k best vectors for each query (inner product, or smallest L2), by blocks."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    query_norms = (queries * queries).sum(1)[:, None] if metric == "l2" else None
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start:start + BLOCK]
        scores = queries @ block.T
        if metric == "l2":
            scores = 2 * scores - (block * block).sum(1)[None, :] - query_norms
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, part, 1)])
        best_rows = np.hstack([best_rows, part + start])
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, 1)
            best_rows = np.take_along_axis(best_rows, keep, 1)
    return best_rows


def calibrate_nprobe(index: faiss.Index, vectors: np.ndarray, labels: np.ndarray, metric: str, target: float,
                     rerank_vectors: np.ndarray | None = None, rerank_factor: int = 8, k: int = 10,
                     queries: int = 200, seed: int = 1234) -> Calibration:
    """The smallest nprobe with mean recall@k >= target over ``queries`` sampled indexed vectors.

    ``labels[i]`` is the index id of ``vectors[i]``; ``rerank_vectors`` (indexed by id) turns on
    exact re-ranking as the server does it for lossy codes.
    """
    n = len(vectors)
    nlist = int(faiss.extract_index_ivf(index).nlist)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(queries, n), replace=False)
    sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    truth = labels[exact_top_k(sample, vectors, k, metric)]
    result = Calibration(nprobe=nlist, target=target, k=k, queries=len(rows))
    for nprobe in [c for c in CANDIDATES if c < nlist] + [nlist]:
        params = search_parameters(index, nprobe)
        fetch = k * rerank_factor if rerank_vectors is not None else k
        _, found = index.search(sample, fetch, params=params)
        if rerank_vectors is not None:
            _, found = exact_rerank(sample, found, rerank_vectors, k, metric)
        hits = [len(np.intersect1d(found[i], truth[i], assume_unique=False)) for i in range(len(rows))]
        recall = float(np.mean(hits)) / k
        result.recall_by_nprobe[nprobe] = recall
        if recall >= target:
            result.nprobe = nprobe
            break
    log.info("nprobe %d reaches recall@%d %.4f (target %.2f) on %d sampled notes", result.nprobe, k,
             result.recall, target, result.queries)
    return result
