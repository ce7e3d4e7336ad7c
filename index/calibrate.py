"""Choosing an index's default nprobe for a target recall, measured on the index itself at build time.

Random histories of indexed notes are recalled exactly (numpy, blocks of the corpus) and through
the index at growing nprobe the way the recall server does it (one search per history note, max
merge, history left out); the default is the smallest nprobe whose mean merged recall@k reaches
the target. The merged list is what callers get, and its recall is not the per-note recall: with
tight clusters split over two lists, nprobe 2 gives per-note recall@10 0.965 but merged recall@200
0.93 (1M notes, 50-note histories).
A fixed default either wastes CPU on easy data (tight clusters need 2-4 lists) or loses recall on
hard data, and the recall server's cost grows almost linearly with nprobe.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faiss
import numpy as np
import pandas as pd

from index.search import exact_rerank, search_parameters

log = logging.getLogger(__name__)

CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
BLOCK = 65536
PLATEAU = 0.001  # recall this close to the best measured counts as the best (4 of 4,000 notes)


@dataclass
class Calibration:
    nprobe: int
    target: float
    k: int
    queries: int
    history: int = 1
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


def exact_merged(vectors: np.ndarray, histories: np.ndarray, k: int, metric: str) -> list[np.ndarray]:
    """Rows of the exact merged top k of each history: best score over its notes, its notes left out."""
    out = []
    for rows in histories:
        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        for start in range(0, len(vectors), BLOCK):
            block = vectors[start:start + BLOCK]
            scores = vectors[rows] @ block.T
            if metric == "l2":
                scores = 2 * scores - (block * block).sum(1)[None, :] - (vectors[rows] ** 2).sum(1)[:, None]
            best[start:start + len(block)] = scores.max(axis=0)
        best[rows] = -np.inf
        take = min(k, len(vectors) - len(rows))
        out.append(np.argpartition(-best, take - 1)[:take])
    return out


def plateau_nprobe(recall_by_nprobe: dict[int, float]) -> int:
    """The smallest nprobe within PLATEAU of the best recall measured.

    When lossy codes (SQ8 without re-ranking, say) cap the recall below the target, probing more
    lists buys nothing past the plateau: the default must not become a scan of every list.
    """
    best = max(recall_by_nprobe.values())
    return min(nprobe for nprobe, recall in recall_by_nprobe.items() if recall >= best - PLATEAU)


def calibrate_nprobe(index: faiss.Index, vectors: np.ndarray, labels: np.ndarray, metric: str, target: float,
                     rerank_vectors: np.ndarray | None = None, rerank_factor: int = 8, k: int = 200,
                     history: int = 50, histories: int = 20, seed: int = 1234) -> Calibration:
    """The smallest nprobe whose merged recall@k reaches ``target``, as the recall server merges
    (where none does, the smallest on the plateau of the best recall, see ``plateau_nprobe``).

    Each of ``histories`` random histories of ``history`` indexed notes is searched as the server
    does it (every history note for k neighbours, history left out inside the search, ``max``
    merge) and compared with the exact merged top k over every note. ``history=1`` measures the
    plain recall@k of single notes. ``labels[i]`` is the index id of ``vectors[i]``;
    ``rerank_vectors`` (indexed by id) re-ranks exactly, as the server does for lossy codes.
    """
    n = len(vectors)
    nlist = int(faiss.extract_index_ivf(index).nlist)
    history = max(1, min(history, n - 1))
    k = max(1, min(k, n - history))
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.choice(n, size=history, replace=False) for _ in range(max(1, histories))])
    truth = exact_merged(vectors, samples, k, metric)
    result = Calibration(nprobe=nlist, target=target, k=k, queries=len(samples), history=history)
    for nprobe in [c for c in CANDIDATES if c < nlist] + [nlist]:
        recalls = []
        for rows, expected in zip(samples, truth):
            queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
            excluded = np.ascontiguousarray(labels[rows], dtype=np.int64)
            batch = faiss.IDSelectorBatch(len(excluded), faiss.swig_ptr(excluded))
            selector = faiss.IDSelectorNot(batch)
            params = search_parameters(index, nprobe, selector)
            fetch = k * rerank_factor if rerank_vectors is not None else k
            scores, found = index.search(queries, fetch, params=params)
            if rerank_vectors is not None:
                scores, found = exact_rerank(queries, found, rerank_vectors, k, metric)
            elif metric == "l2":
                scores = -scores
            flat_scores, flat_found = scores.ravel(), found.ravel()
            order = np.argsort(-flat_scores, kind="stable")
            merged = pd.unique(flat_found[order][flat_found[order] >= 0])[:k]
            recalls.append(len(np.intersect1d(merged, labels[expected])) / len(expected))
            del batch, selector
        recall = float(np.mean(recalls))
        result.recall_by_nprobe[nprobe] = recall
        if recall >= target:
            result.nprobe = nprobe
            break
    else:
        result.nprobe = plateau_nprobe(result.recall_by_nprobe)
        log.warning("no nprobe reaches merged recall@%d %g: the codes cap it at %.4f, reached from nprobe %d "
                    "(re-rank with exact vectors or use finer codes for more)", k, target,
                    max(result.recall_by_nprobe.values()), result.nprobe)
    log.info("nprobe %d reaches merged recall@%d %.4f (target %.2f) over %d histories of %d notes", result.nprobe,
             k, result.recall, target, result.queries, history)
    return result
