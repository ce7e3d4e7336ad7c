"""The RecallService servicer: validation, history lookup, filters, the searches, the response.

The searches and the merge (``recall_server/passes.py``) work on the index's int64 labels and only
the k survivors are mapped to note ids, so a request costs one table round trip, a batched FAISS
call or two (none for history notes in the neighbour cache) and a few vectorised array passes.
"""
from __future__ import annotations

import logging
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from embedding import table as table_module
from index.ids import UNKNOWN_TIME
from recall_server.config import ServerConfig
from recall_server.filters import FreshnessBitmaps, build_selector
from recall_server.holder import IndexHolder
from recall_server.logs import log_event
from recall_server.merge import recency_weights
from recall_server.metrics import RecallMetrics
from recall_server.neighbours import NeighbourCaches
from recall_server.passes import HistorySearch
from recall_server.stubs import recall_pb2, recall_pb2_grpc

logger = logging.getLogger("recall_server.service")
access_logger = logging.getLogger("recall_server.access")
SERVICE_NAME = recall_pb2.DESCRIPTOR.services_by_name["RecallService"].full_name

# The table's "storage cannot be reached" error, plus the socket-level errors behind it.
TABLE_UNAVAILABLE = tuple(
    error for error in (getattr(table_module, "TableUnavailable", None), ConnectionError, TimeoutError, OSError)
    if error is not None
)
MODEL_VERSION_MISMATCH = getattr(table_module, "ModelVersionMismatch", None)


@dataclass(frozen=True)
class MalformedRequest:
    """What the request deserializer hands the servicer for bytes that are not a RecallRequest.

    gRPC answers a deserializer that raises with INTERNAL and never calls the servicer, so the
    caller would blame the server and the metrics would never see the call. Returning this
    sentinel lets the servicer answer INVALID_ARGUMENT and count it like any other bad request.
    """

    size: int
    reason: str
    user_id: str = ""
    history: tuple = ()
    k: int = 0


def parse_request(data: bytes) -> recall_pb2.RecallRequest | MalformedRequest:
    """RecallRequest.FromString that turns garbage, truncation and invalid UTF-8 into a MalformedRequest."""
    try:
        return recall_pb2.RecallRequest.FromString(data)
    except (DecodeError, ValueError, UnicodeDecodeError) as exc:
        return MalformedRequest(size=len(data), reason=str(exc) or type(exc).__name__)


def add_to_server(service: "RecallService", server: grpc.Server) -> None:
    """Registers ``service`` with ``parse_request`` as the Recall deserializer (not the generated one)."""
    handlers = {"Recall": grpc.unary_unary_rpc_method_handler(
        service.Recall, request_deserializer=parse_request,
        response_serializer=recall_pb2.RecallResponse.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


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
    excluded: set[str]  # every history note (unless kept) and the request's `exclude`
    k: int
    per_query_k: int
    truncated: bool
    nprobe: int | None = None  # None = the server's --nprobe, else the index's default
    published_after_ms: int | None = None


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
    if request.nprobe < 0:
        raise RecallAbort(invalid, f"nprobe must be 0 (server default) or positive, got {request.nprobe}")
    if request.nprobe > config.max_nprobe:
        raise RecallAbort(invalid, f"nprobe={request.nprobe} is above the server's limit max_nprobe={config.max_nprobe}")
    if len(request.exclude) > config.max_exclude:
        raise RecallAbort(invalid, f"exclude lists {len(request.exclude)} note ids, above the server's limit "
                                   f"max_exclude={config.max_exclude}")
    for position, note_id in enumerate(request.exclude):
        if not note_id.strip():
            raise RecallAbort(invalid, f"exclude[{position}] is an empty note id")
    published_after_ms = None
    if request.HasField("published_after"):
        stamp = request.published_after
        if stamp.seconds < 0 or not 0 <= stamp.nanos < 1_000_000_000:
            raise RecallAbort(invalid, f"published_after must be a time at or after 1970-01-01T00:00:00Z, "
                                       f"got seconds={stamp.seconds} nanos={stamp.nanos}")
        # Round up: "at or after" a time between two milliseconds starts at the next one.
        published_after_ms = stamp.seconds * 1000 + -(-stamp.nanos // 1_000_000)
    distinct = list(dict.fromkeys(history))
    queries = distinct[:config.max_history]
    exclude = request.exclude_history if request.HasField("exclude_history") else True
    excluded = (set(distinct) if exclude else set()) | set(request.exclude)
    per_query_k = request.per_query_k or config.default_per_query_k or request.k
    return RecallPlan(queries=queries, excluded=excluded, k=request.k,
                      per_query_k=min(per_query_k, config.max_per_query_k), truncated=len(distinct) > len(queries),
                      nprobe=request.nprobe or None, published_after_ms=published_after_ms)


class RecallService(recall_pb2_grpc.RecallServiceServicer):
    """Recall(user history) -> merged top-k notes, each with the history note that recalled it."""

    def __init__(self, config: ServerConfig, holder: IndexHolder, table, metrics: RecallMetrics) -> None:
        self.config = config
        self.holder = holder
        self.table = table
        self.metrics = metrics
        # Lookups run here so a table that hangs costs the caller at most its deadline, not a stuck call.
        self._lookups = futures.ThreadPoolExecutor(max_workers=config.request_threads, thread_name_prefix="lookup")
        self._local_table = table_module.is_in_process(str(getattr(table, "url", "")))
        self._fresh = FreshnessBitmaps()
        self._neighbours = NeighbourCaches(int(config.neighbour_cache_mb * 1e6))
        metrics.count_neighbour_cache_entries(self._neighbours.entries)

    def close(self) -> None:
        self._lookups.shutdown(wait=False, cancel_futures=True)

    def Recall(self, request, context):  # noqa: N802 (gRPC method name)
        started = time.perf_counter()
        code = "OK"
        try:
            if isinstance(request, MalformedRequest):
                self.metrics.malformed_requests.inc()
                raise RecallAbort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"request is not a valid i2i.v1.RecallRequest ({request.size} bytes): "
                                  f"{request.reason}; send a serialized RecallRequest with UTF-8 strings")
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
        cpu: dict[str, float] = {}
        started = time.thread_time()
        lookup = self._lookup(plan.queries, served.model_version, context.time_remaining())
        cpu["lookup"] = time.thread_time() - started
        response = recall_pb2.RecallResponse(index_version=served.version, model_version=served.model_version,
                                             missing_history=lookup.missing_ids)
        if lookup.missing_ids:
            self.metrics.missing_history.inc(len(lookup.missing_ids))
        if not lookup.found_ids:
            return response
        ensure_active(context)
        return self._search_and_merge(plan, served, lookup, response, context, cpu)

    def _search_and_merge(self, plan: RecallPlan, served, lookup, response: recall_pb2.RecallResponse,
                          context, cpu: dict[str, float]) -> recall_pb2.RecallResponse:
        """Filters, coarse assignment, scan, merge and the response."""
        index = served.index
        excluded_labels = index.ids.lookup(list(plan.excluded)) if plan.excluded else np.empty(0, np.int64)
        excluded_labels = excluded_labels[excluded_labels >= 0]
        fresh = None
        if plan.published_after_ms is not None:
            published = index.ids.published_ms()
            if not (published != UNKNOWN_TIME).any():
                raise RecallAbort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"published_after: index version {served.version} holds no publication times "
                                  "(build or update it with --notes)")
            fresh, _accepted = self._fresh.get(served.version, published, plan.published_after_ms)
        selector = build_selector(excluded_labels, fresh)
        nprobe = index.effective_nprobe(plan.nprobe or self.config.nprobe)
        position = {note_id: i for i, note_id in enumerate(plan.queries)}
        weights = recency_weights([position[note_id] for note_id in lookup.found_ids], self.config.recency_half_life)
        cached = self._neighbours.enabled and fresh is None and self.config.merge == "max" \
            and self.config.search_mode == "batched"  # a selective freshness filter would empty cached lists
        search = HistorySearch(index=index, queries=index.prepare_queries(lookup.vectors), nprobe=nprobe,
                               selector=selector.selector, excluded=excluded_labels,
                               cache=self._neighbours.of(index) if cached else None,
                               per_note=self.config.search_mode == "per_note", metrics=self.metrics, cpu=cpu)
        merged = search.run(plan.k, plan.per_query_k, self.config.merge, weights)
        ensure_active(context)
        merged_at = time.thread_time()
        kept = slice(0, min(len(merged), plan.k))
        note_ids = index.ids.note_ids_of(merged.keys[kept]).tolist()
        found_ids = lookup.found_ids
        add = response.notes.add
        for note_id, score, source in zip(note_ids, merged.scores[kept].tolist(), merged.sources[kept].tolist()):
            add(note_id=note_id, score=score, source_note_id=found_ids[source])
        cpu["response"] = time.thread_time() - merged_at
        self.metrics.stage_cpu(cpu)
        return response

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
