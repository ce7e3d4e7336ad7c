"""Prometheus metrics of one server instance, in its own registry so several servers can share a process.

In a process of an ``i2i serve --processes N`` group (``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus_client was imported) the values live in files the group's supervisor adds up
(recall_server/processes.py); each gauge says how: ``livesum`` of the processes, ``livemax``,
``livemin`` or ``livemostrecent`` (the value written last).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, values


def multiprocess_values() -> bool:
    """True when this process writes its metric values to files for a supervisor to add up."""
    return values.ValueClass is not values.MutexValue

INDEX_CREATED = "i2i_recall_index_created_timestamp_seconds"
INDEX_CREATED_HELP = "When the served index version was published (Unix time)"
INDEX_AGE = "i2i_recall_index_age_seconds"
INDEX_AGE_HELP = "Age of the served index version"


def index_age_seconds(created_at: float | None) -> float:
    """Seconds since an index version was published (NaN when none is served), at scrape time."""
    return float("nan") if created_at is None else max(0.0, time.time() - created_at)


LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class RecallMetrics:
    """Requests, latency, errors by status code, the served index, reloads and missing history."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("i2i_recall_requests", "Recall requests by final status code", ["code"], registry=r)
        self.errors = Counter("i2i_recall_errors", "Recall requests that ended with an error, by status code",
                              ["code"], registry=r)
        self.latency = Histogram("i2i_recall_latency_seconds", "Recall latency inside the server",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.multiprocess = multiprocess_values()
        self.index_info = Gauge("i2i_recall_index_info", "1 for the index version being served",
                                ["index_version", "model_version"], registry=r, multiprocess_mode="livemax")
        self.index_loaded = Gauge("i2i_recall_index_loaded", "1 once an index is being served", registry=r,
                                  multiprocess_mode="livemin")
        self.index_ntotal = Gauge("i2i_recall_index_notes", "Notes in the served index", registry=r,
                                  multiprocess_mode="livemostrecent")
        self.reloads = Counter("i2i_recall_index_reloads", "Index loads by outcome (ok or failed)", ["outcome"],
                               registry=r)
        self.missing_history = Counter("i2i_recall_missing_history",
                                       "History note ids without an embedding for the served model version",
                                       registry=r)
        self.history_truncated = Counter("i2i_recall_history_truncated",
                                         "Requests whose history was cut to the server's limit", registry=r)
        self.malformed_requests = Counter("i2i_recall_malformed_requests",
                                          "Calls whose bytes are not a valid RecallRequest (answered INVALID_ARGUMENT)",
                                          registry=r)
        self.deeper_searches = Counter("i2i_recall_deeper_searches",
                                       "History notes searched a second time at full depth (max merge)", registry=r)
        self.neighbour_cache_hits = Counter("i2i_recall_neighbour_cache_hits",
                                            "History notes whose neighbours came from the neighbour cache",
                                            registry=r)
        self.neighbour_cache_misses = Counter("i2i_recall_neighbour_cache_misses",
                                              "History notes searched because the neighbour cache lacked them",
                                              registry=r)
        self.neighbour_cache_entries = Gauge("i2i_recall_neighbour_cache_entries",
                                             "Neighbour lists held by the neighbour caches", registry=r,
                                             multiprocess_mode="livesum")
        self.cpu = Counter("i2i_recall_cpu_seconds", "CPU seconds of the request threads by stage (lookup, "
                           "cache, quantizer, scan, rerank, merge, response); the rest of the process's CPU is gRPC "
                           "and protobuf", ["stage"], registry=r)
        self.unauthenticated = Counter("i2i_recall_unauthenticated", "Calls refused for a missing or bad token",
                                       ["method"], registry=r)

        # Freshness: how far the served index lags the embedding table.
        self.index_created = Gauge(INDEX_CREATED, INDEX_CREATED_HELP, registry=r,
                                   multiprocess_mode="livemostrecent")
        self._created_at: float | None = None
        # In a process group the entries gauge is written when lists are stored (no scrape-time callback).
        self.neighbour_cache_size: Callable[[], int] | None = None
        if not self.multiprocess:  # computed at scrape time; a process group's supervisor computes it instead
            self.index_age = Gauge(INDEX_AGE, INDEX_AGE_HELP, registry=r)
            self.index_age.set_function(self._age)
        self.newest_embedded = Gauge("i2i_recall_index_newest_embedded_at_seconds",
                                     "Newest embedded_at among the table rows of the served model version "
                                     "written no later than the served version (Unix time)", registry=r,
                                     multiprocess_mode="livemostrecent")
        self.not_indexed = Gauge("i2i_recall_table_notes_not_indexed",
                                 "Notes of the served model version in the table but not in the served index",
                                 registry=r, multiprocess_mode="livemostrecent")
        self.freshness_checked = Gauge("i2i_recall_freshness_checked_timestamp_seconds",
                                       "When the table-side freshness gauges were last computed (in a process "
                                       "group: the oldest of the processes' last checks)", registry=r,
                                       multiprocess_mode="livemin")
        # Labelled children resolved once (``labels()`` takes a lock and builds a key on every call).
        self._children: dict[tuple[str, str], object] = {}
        for gauge in (self.index_created, self.newest_embedded, self.not_indexed):
            gauge.set(float("nan"))  # unknown until the first check, never a misleading 0

    def _age(self) -> float:
        return index_age_seconds(self._created_at)

    def count_neighbour_cache_entries(self, entries: Callable[[], int]) -> None:
        """Reports ``entries()`` as the cache-entries gauge: at scrape time in one process; in a
        process group (values in files, no scrape-time callback) whenever lists are stored."""
        if self.multiprocess:
            self.neighbour_cache_size = entries
        else:
            self.neighbour_cache_entries.set_function(entries)

    def freshness(self, created_at: float, newest_embedded_at: float | None, not_indexed: int | None,
                  checked_at: float) -> None:
        self._created_at = created_at
        self.index_created.set(created_at)
        self.newest_embedded.set(float("nan") if newest_embedded_at is None else newest_embedded_at)
        self.not_indexed.set(float("nan") if not_indexed is None else not_indexed)
        self.freshness_checked.set(checked_at)

    def served(self, index_version: str, model_version: str, ntotal: int) -> None:
        """Points the index gauges at a newly swapped-in version."""
        if self.multiprocess:  # a cleared series would stay in this process's file: mark it 0 instead
            for labels in list(self.index_info._metrics):
                self.index_info.labels(*labels).set(0)
        else:
            self.index_info.clear()
        self.index_info.labels(index_version=index_version, model_version=model_version).set(1)
        self.index_loaded.set(1)
        self.index_ntotal.set(ntotal)

    def stage_cpu(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            child = self._children.get(("cpu", stage))
            if child is None:
                child = self._children[("cpu", stage)] = self.cpu.labels(stage=stage)
            child.inc(value)

    def neighbour_cache(self, hits: int, misses: int) -> None:
        if hits:
            self.neighbour_cache_hits.inc(hits)
        if misses:
            self.neighbour_cache_misses.inc(misses)
            if self.neighbour_cache_size is not None:
                self.neighbour_cache_entries.set(self.neighbour_cache_size())

    def finished(self, code: str, seconds: float) -> None:
        child = self._children.get(("requests", code))
        if child is None:
            child = self._children[("requests", code)] = self.requests.labels(code=code)
        child.inc()
        if code != "OK":
            self.errors.labels(code=code).inc()
        self.latency.observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (0 when absent); used by the summary and by checks."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Exposes /metrics on ``host:port`` (0 = any free port); returns the bound port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        """Stops the /metrics endpoint, if one was started."""
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
            self._http = None
