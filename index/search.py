"""Batched, thread-safe search of a loaded index version.

nprobe is passed per call in ``faiss.SearchParametersIVF`` instead of being set on the shared
index, so concurrent searches with different nprobe never race. For lossy codes (PQ, SQ8) the
index is searched for ``k * rerank_factor`` candidates that are then re-scored exactly against
the stored float32 vectors, which is what brings their recall back up to IVF-Flat's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import faiss
import numpy as np

from i2i.core.errors import InputError
from index.coarse import FlatCoarse
from index.manifest import Manifest
from index.version_files import VersionContents

DEFAULT_BATCH = 1024


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalises rows; zero rows stay zero."""
    vectors = np.array(vectors, dtype=np.float32, copy=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def search_parameters(index: faiss.Index, nprobe: int, selector: faiss.IDSelector | None = None
                      ) -> faiss.SearchParameters:
    """Per-call parameters; an OPQ/PCA pre-transform wraps the IVF parameters.

    ``selector`` restricts the lists' scan to the ids it accepts (filters applied inside the search,
    so k results are still found whenever the probed lists hold k accepted notes). An HNSW coarse
    quantizer is given an efSearch of at least twice nprobe, so it finds the nprobe nearest lists.
    """
    ivf = faiss.extract_index_ivf(index)
    ivf_params = faiss.SearchParametersIVF(nprobe=nprobe)
    if selector is not None:
        ivf_params.sel = selector
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        hnsw_params = faiss.SearchParametersHNSW(efSearch=max(2 * nprobe, quantizer.hnsw.efSearch))
        ivf_params.quantizer_params = hnsw_params
        ivf_params.referenced_objects = [hnsw_params]  # keeps it alive as long as the parameters
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.SearchParametersPreTransform(index_params=ivf_params)
    return ivf_params


def exact_rerank(queries: np.ndarray, labels: np.ndarray, vectors: np.ndarray, k: int, metric: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores candidate labels exactly and keeps the best k (higher score first, -1 last)."""
    valid = labels >= 0
    candidates = np.asarray(vectors[np.where(valid, labels, 0).ravel()], dtype=np.float32)
    candidates = candidates.reshape(labels.shape[0], labels.shape[1], -1)
    scores = np.matmul(candidates, queries[:, :, None])[:, :, 0]  # batched GEMV
    if metric == "l2":
        scores = 2 * scores - np.einsum("qcd,qcd->qc", candidates, candidates) - (queries * queries).sum(1)[:, None]
    scores[~valid] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(np.where(valid, labels, -1), order, axis=1)


@dataclass
class Probe:
    """Queries prepared for an index and the lists each probes, so a deeper search of some rows
    later reuses the coarse assignment instead of computing it again."""

    queries: np.ndarray  # float32 (n, dim), normalised when the index is
    nprobe: int
    distances: np.ndarray | None = None  # coarse scores (n, nprobe) as FAISS's quantizer gives them
    lists: np.ndarray | None = None  # int64 (n, nprobe); None: the index assigns lists inside its search

    def rows(self, which: np.ndarray) -> "Probe":
        """The same probe for a subset of its queries."""
        return Probe(np.ascontiguousarray(self.queries[which]), self.nprobe,
                     None if self.distances is None else np.ascontiguousarray(self.distances[which]),
                     None if self.lists is None else np.ascontiguousarray(self.lists[which]))


class LoadedIndex:
    """One verified index version in memory, ready to search from many threads at once.

    ``search`` returns ``(scores, note_ids)``: ``scores`` is float32 (nq, k), higher is better
    (inner product, or minus the squared L2 distance for ``metric == "l2"``); ``note_ids[i]`` is
    the list of note ids for query i, best first. When fewer than k notes can be found (a small
    index, or few probed lists) the -1 padding is dropped, so ``note_ids[i]`` is shorter than k
    and ``scores[i, len(note_ids[i]):]`` is ``-inf``.
    """

    def __init__(self, manifest: Manifest, contents: VersionContents,
                 on_release: Callable[[], None] | None = None) -> None:
        self.manifest_record = manifest
        self.contents = contents
        self.index = contents.index
        self.ids = contents.ids
        self._on_release = on_release
        self._ivf = faiss.extract_index_ivf(self.index)
        self._nlist = int(self._ivf.nlist)
        self._pretransformed = isinstance(self.index, faiss.IndexPreTransform)
        quantizer = faiss.downcast_index(self._ivf.quantizer)
        self._flat_coarse = FlatCoarse(quantizer) if isinstance(quantizer, faiss.IndexFlat) else None
        self._plain_ivf_params = not self._pretransformed and not isinstance(quantizer, faiss.IndexHNSW)

    # ---- description --------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest_record.version

    @property
    def manifest(self) -> dict:
        return asdict(self.manifest_record)

    @property
    def model_version(self) -> str:
        return self.manifest_record.model_version

    @property
    def dim(self) -> int:
        return self.manifest_record.dim

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return self._nlist

    def require_model_version(self, model_version: str) -> None:
        """Refuses to pair this index with embeddings of another model version."""
        if model_version != self.model_version:
            raise InputError(
                f"index version {self.version} holds embeddings of model version {self.model_version!r}, "
                f"not {model_version!r}"
            )

    # ---- search -------------------------------------------------------------------------
    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"queries must be a 2-d array with {self.dim} columns, got shape {queries.shape}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not np.isfinite(queries).all():
            raise InputError("queries hold NaN or infinite values")
        return normalize_rows(queries) if self.manifest_record.normalized else queries

    def effective_nprobe(self, nprobe: int | None = None) -> int:
        """The nprobe a search runs with: the index's default when None, at most nlist."""
        nprobe = self.manifest_record.default_nprobe if nprobe is None else nprobe
        if not isinstance(nprobe, (int, np.integer)) or nprobe <= 0:
            raise InputError(f"nprobe must be a positive integer, got {nprobe!r}")
        return int(min(nprobe, self.nlist))

    def probe(self, queries: np.ndarray, nprobe: int | None = None, timings: dict[str, float] | None = None,
              prepared: bool = False) -> Probe:
        """Prepares queries and picks the lists each one probes (``timings`` gets ``quantizer`` CPU seconds).

        A flat coarse quantizer runs as one BLAS product here (``FlatCoarse``); other quantizers run
        FAISS's own search; behind a pre-transform (OPQ, PCA) the index assigns lists inside its search.
        ``prepared``: the queries already went through ``prepare_queries`` (not normalised twice).
        """
        nprobe = self.effective_nprobe(nprobe)
        queries = queries if prepared else self.prepare_queries(queries)
        if self._pretransformed:
            return Probe(queries, nprobe)
        started = time.thread_time()
        if self._flat_coarse is not None:
            distances, lists = self._flat_coarse.search(queries, nprobe)
        else:
            params = search_parameters(self.index, nprobe)  # kept alive while its quantizer_params are used
            quantizer_params = params.quantizer_params
            distances, lists = (self._ivf.quantizer.search(queries, nprobe, params=quantizer_params)
                                if quantizer_params is not None else self._ivf.quantizer.search(queries, nprobe))
        if timings is not None:
            timings["quantizer"] = timings.get("quantizer", 0.0) + time.thread_time() - started
        return Probe(queries, nprobe, np.ascontiguousarray(distances, dtype=np.float32),
                     np.ascontiguousarray(lists, dtype=np.int64))

    def search_probe(self, probe: Probe, k: int, selector: faiss.IDSelector | None = None,
                     timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scans the probed lists: (scores, labels) of shape (n, k), best first, -inf / -1 padded.

        ``selector`` (a FAISS IDSelector over the index's ids) leaves out the ids it rejects; lossy
        codes are re-ranked exactly. ``timings`` gets ``scan`` and ``rerank`` CPU seconds.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        rerank = self.manifest_record.rerank and self.contents.vectors is not None
        fetch = int(k * self.manifest_record.rerank_factor if rerank else k)
        n = probe.queries.shape[0]
        if probe.lists is None or not self._plain_ivf_params:
            params = search_parameters(self.index, probe.nprobe, selector)
        else:  # what search_parameters builds for a plain IVF, without looking the index over again
            params = faiss.SearchParametersIVF(nprobe=probe.nprobe)
            if selector is not None:
                params.sel = selector
        started = time.thread_time()
        if probe.lists is None:
            distances, found = self.index.search(probe.queries, fetch, params=params)
        else:
            distances = np.empty((n, fetch), dtype=np.float32)
            found = np.empty((n, fetch), dtype=np.int64)
            # The C++ call: the Python wrapper of search_preassigned refuses per-call parameters.
            self._ivf.search_preassigned_c(n, faiss.swig_ptr(probe.queries), fetch, faiss.swig_ptr(probe.lists),
                                           faiss.swig_ptr(probe.distances), faiss.swig_ptr(distances),
                                           faiss.swig_ptr(found), False, params)
        scanned = time.thread_time()
        if timings is not None:
            timings["scan"] = timings.get("scan", 0.0) + scanned - started
        if rerank:
            distances, found = exact_rerank(probe.queries, found, self.contents.vectors, k, self.manifest_record.metric)
            if timings is not None:
                timings["rerank"] = timings.get("rerank", 0.0) + time.thread_time() - scanned
        elif self.manifest_record.metric == "l2":
            distances = -distances
        distances = np.asarray(distances, dtype=np.float32)
        distances[found < 0] = -np.inf
        return distances[:, :k], found[:, :k]

    def search_labels(self, queries: np.ndarray, k: int, nprobe: int | None = None,
                      batch_size: int = DEFAULT_BATCH, selector: faiss.IDSelector | None = None,
                      timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` but returns int64 labels (-1 = none) instead of note ids; ``selector``
        (a FAISS IDSelector over the index's ids) leaves out the ids it rejects. ``timings``, when
        given, accumulates this thread's CPU seconds under ``quantizer``, ``scan`` and ``rerank``."""
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        queries = np.asarray(queries)
        parts = [self.search_probe(self.probe(queries[start:start + batch_size], nprobe, timings), k, selector,
                                   timings)
                 for start in range(0, max(len(queries), 1), batch_size)]
        if len(parts) == 1:
            return parts[0]
        return np.vstack([scores for scores, _ in parts]), np.vstack([labels for _, labels in parts])

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               batch_size: int = DEFAULT_BATCH) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k note ids for each query row (see the class docstring for the padding rule)."""
        scores, labels = self.search_labels(queries, k, nprobe, batch_size)
        names = self.ids.note_ids_of(labels)
        counts = (labels >= 0).sum(axis=1)
        return scores, [names[row, :count].tolist() for row, count in enumerate(counts)]

    # ---- lifetime -----------------------------------------------------------------------
    def release(self) -> None:
        """Drops this process's hold on the version (so retention may delete it later)."""
        if self._on_release is not None:
            self._on_release()
            self._on_release = None
