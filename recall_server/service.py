"""The RecallService servicer: history lookup, one batched ANN search, merge, history exclusion.

The merge works on the index's int64 labels and only the k survivors are mapped to note ids, so
a request costs one table round trip, one FAISS call and a few vectorised array passes.
"""
from __future__ import annotations

import logging
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
import numpy as np

from embedding import table as table_module
from recall_server.config import ServerConfig
from recall_server.holder import IndexHolder
from recall_server.logs import log_event
from recall_server.merge import merge, recency_weights
from recall_server.metrics import RecallMetrics
from recall_server.stubs import recall_pb2, recall_pb2_grpc

logger = logging.getLogger("recall_server.service")
access_logger = logging.getLogger("recall_server.access")

# The table's "storage cannot be reached" error, plus the socket-level errors behind it.
TABLE_UNAVAILABLE = tuple(
    error for error in (getattr(table_module, "TableUnavailable", None), ConnectionError, TimeoutError, OSError)
    if error is not None
)
MODEL_VERSION_MISMATCH = getattr(table_module, "ModelVersionMismatch", None)


class RecallAbort(Exception):
    """Ends a request with a status code and a message that says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RecallPlan:
    """A validated request: the queries to run and what to drop from the results."""

    queries: list[str]  # distinct history ids, most recent first, cut to max_history
    excluded: set[str]
    k: int
    per_query_k: int
    truncated: bool


def plan_request(request: recall_pb2.RecallRequest, config: ServerConfig) -> RecallPlan:
    """Validates a request against the server's limits (INVALID_ARGUMENT naming the problem)."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    history = list(request.history)
    if not history:
        raise RecallAbort(invalid, "history is empty: send at least one note id")
    if request.k <= 0:
        raise RecallAbort(invalid, f"k must be positive, got {request.k}")
    if request.k > config.max_k:
        raise RecallAbort(invalid, f"k={request.k} is above the server's limit max_k={config.max_k}")
    if request.per_query_k < 0:
        raise RecallAbort(invalid, f"per_query_k must be 0 (server default) or positive, got {request.per_query_k}")
    if request.per_query_k > config.max_per_query_k:
        raise RecallAbort(invalid, f"per_query_k={request.per_query_k} is above the server's limit "
                                   f"max_per_query_k={config.max_per_query_k}")
    for position, note_id in enumerate(history):
        if not note_id.strip():
            raise RecallAbort(invalid, f"history[{position}] is an empty note id")
    distinct = list(dict.fromkeys(history))
    queries = distinct[:config.max_history]
    exclude = request.exclude_history if request.HasField("exclude_history") else True
    excluded = set(distinct) if exclude else set()
    per_query_k = request.per_query_k or config.default_per_query_k or request.k + len(excluded)
    return RecallPlan(queries=queries, excluded=excluded, k=request.k,
                      per_query_k=min(per_query_k, config.max_per_query_k), truncated=len(distinct) > len(queries))


class RecallService(recall_pb2_grpc.RecallServiceServicer):
    """Recall(user history) -> merged top-k notes, each with the history note that recalled it."""

    def __init__(self, config: ServerConfig, holder: IndexHolder, table, metrics: RecallMetrics) -> None:
        self.config = config
        self.holder = holder
        self.table = table
        self.metrics = metrics
        # Lookups run here so a table that hangs costs the caller at most its deadline, not a stuck call.
        self._lookups = futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="lookup")
        self._local_table = str(getattr(table, "url", "")).startswith("parquet:")

    def close(self) -> None:
        self._lookups.shutdown(wait=False, cancel_futures=True)

    def Recall(self, request, context):  # noqa: N802 (gRPC method name)
        started = time.perf_counter()
        code = "OK"
        try:
            return self.recall(request, context)
        except RecallAbort as abort:
            code = abort.code.name
            context.abort(abort.code, abort.message)
        except Exception as exc:
            code = "INTERNAL"
            log_event(logger, logging.ERROR, "recall_failed", error=f"{type(exc).__name__}: {exc}")
            logger.debug("recall failure", exc_info=True)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.finished(code, elapsed)
            if self.config.access_log or code not in ("OK", "INVALID_ARGUMENT", "CANCELLED"):
                log_event(access_logger, logging.INFO if code == "OK" else logging.WARNING, "recall",
                          user_id=request.user_id, history=len(request.history), k=request.k, code=code,
                          ms=round(elapsed * 1000, 2))

    def recall(self, request: recall_pb2.RecallRequest, context) -> recall_pb2.RecallResponse:
        plan = plan_request(request, self.config)
        served = self.holder.current  # kept for the whole request, across any swap
        if served is None:
            raise RecallAbort(grpc.StatusCode.UNAVAILABLE, "no index loaded yet: the server is starting "
                                                           "or INDEX_DIR/CURRENT names no loadable version")
        if plan.truncated:
            self.metrics.history_truncated.inc()
        ensure_active(context)
        lookup = self._lookup(plan.queries, served.model_version, context.time_remaining())
        response = recall_pb2.RecallResponse(index_version=served.version, model_version=served.model_version,
                                             missing_history=lookup.missing_ids)
        if lookup.missing_ids:
            self.metrics.missing_history.inc(len(lookup.missing_ids))
        if not lookup.found_ids:
            return response
        ensure_active(context)
        index = served.index
        scores, labels = self._search(index, lookup.vectors, plan.per_query_k)
        ensure_active(context)
        position = {note_id: i for i, note_id in enumerate(plan.queries)}
        weights = recency_weights([position[note_id] for note_id in lookup.found_ids], self.config.recency_half_life)
        merged = merge(labels, scores, labels >= 0, self.config.merge, plan.k + len(plan.excluded), weights)
        keep = np.ones(len(merged), dtype=bool)
        if plan.excluded:
            excluded_labels = [label for label in map(index.ids.id_of, plan.excluded) if label is not None]
            keep = ~np.isin(merged.keys, np.asarray(excluded_labels, dtype=np.int64))
        kept = np.flatnonzero(keep)[:plan.k]
        note_ids = index.ids.note_ids_of(merged.keys[kept]).tolist()
        found_ids = lookup.found_ids
        add = response.notes.add
        for note_id, score, source in zip(note_ids, merged.scores[kept].tolist(), merged.sources[kept].tolist()):
            add(note_id=note_id, score=score, source_note_id=found_ids[source])
        return response

    def _search(self, index, vectors: np.ndarray, per_query_k: int) -> tuple[np.ndarray, np.ndarray]:
        """One batched search with per-call nprobe (never set on the shared index, which races)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.config.search_mode == "batched":
            return index.search_labels(vectors, per_query_k, nprobe=self.config.nprobe)
        parts = [index.search_labels(vectors[row:row + 1], per_query_k, nprobe=self.config.nprobe)
                 for row in range(len(vectors))]
        return np.vstack([scores for scores, _ in parts]), np.vstack([labels for _, labels in parts])

    def _lookup(self, queries: list[str], model_version: str, remaining: float | None):
        budget = self.config.table_timeout_seconds
        if remaining is not None:  # answer before the caller gives up, so it learns why
            budget = min(budget, max(remaining - min(0.05, remaining * 0.2), 0.001))
        try:
            if self._local_table:  # an in-process table cannot hang; skip the thread hop
                return self.table.get_many(queries, model_version)
            pending = self._lookups.submit(self.table.get_many, queries, model_version)
            return pending.result(timeout=budget)
        except futures.TimeoutError:
            raise RecallAbort(grpc.StatusCode.UNAVAILABLE,
                              f"embedding table did not answer within {budget:.3f} s") from None
        except TABLE_UNAVAILABLE as exc:
            raise RecallAbort(grpc.StatusCode.UNAVAILABLE, f"embedding table unreachable: {exc}") from exc
        except Exception as exc:
            if MODEL_VERSION_MISMATCH is not None and isinstance(exc, MODEL_VERSION_MISMATCH):
                raise RecallAbort(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
            raise


def ensure_active(context) -> None:
    """Stops work for a call the client cancelled or whose deadline passed."""
    if not context.is_active():
        raise RecallAbort(grpc.StatusCode.CANCELLED, "call cancelled by the client")
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise RecallAbort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
