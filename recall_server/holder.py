"""The index being served, and its hot reload.

A background thread polls ``INDEX_DIR/CURRENT``. When it names another version, that version is
loaded and its checksums verified on the same background thread, checked against the embedding
table's model versions, and then swapped in with one reference assignment. A request takes the
reference once when it starts, so requests in flight finish on the index they began with and the
old index is freed when the last of them lets go. A load that fails is counted and logged; the old
index keeps serving and the failed version is retried after ``retry_seconds``.

Before a swap the heap is settled (``settle_heap``): the version's id map and the table's rows are
millions of long-lived references, and the first full collection after a load traversed them all,
stopping every thread of the process for 100-150 ms (more on a loaded machine) while it served.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from recall_server.logs import log_event
from recall_server.metrics import RecallMetrics

logger = logging.getLogger("recall_server.holder")
FULL_RECOUNT = 10  # freshness checks without a change before the notes not indexed are counted anyway


def settle_heap() -> tuple[float, int]:
    """Collects garbage once, then moves every live object out of the cyclic collector's sight.

    Returns (seconds taken, objects frozen). Frozen objects are still freed by reference counting;
    each settle unfreezes first, so cycles an old version left behind are collected by the next one.
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started, gc.get_freeze_count()


@dataclass(frozen=True)
class ServedIndex:
    """One loaded, verified index version and what requests need to know about it."""

    index: Any  # index.search.LoadedIndex: search_labels(queries, k, nprobe) and ids.note_ids_of(labels)
    version: str
    model_version: str
    dim: int
    ntotal: int
    loaded_at: float


def parse_time(text: Any) -> float | None:
    """Unix time of an ISO 8601 string (a manifest's created_at), None when absent or unreadable."""
    from datetime import datetime, timezone

    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def manifest_field(manifest: Any, name: str, default: Any = None) -> Any:
    """Reads a manifest field whether the manifest is a mapping or an object."""
    if isinstance(manifest, dict):
        return manifest.get(name, default)
    return getattr(manifest, name, default)


class IndexHolder:
    """Holds the served index and swaps in new versions named by CURRENT."""

    def __init__(self, store: Any, table: Any, metrics: RecallMetrics | None = None,
                 poll_seconds: float = 2.0, retry_seconds: float = 30.0, freshness_seconds: float = 60.0) -> None:
        self.store = store
        self.table = table
        self.metrics = metrics or RecallMetrics()
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.freshness_seconds = freshness_seconds
        self._freshness_at = 0.0
        self._freshness_changes: tuple | None = None  # (version, table count, table newest) last counted
        self._recounts_skipped = 0
        self._not_indexed: int | None = None
        self._current: ServedIndex | None = None
        self._failed_at: dict[str, float] = {}
        self._swap_listeners: list[Callable[[ServedIndex], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()
        self._last_current_error: str | None = None
        self.loads_ok = 0
        self.loads_failed = 0

    @property
    def current(self) -> ServedIndex | None:
        """The index to use for one whole request; take it once and keep the reference."""
        return self._current

    def on_swap(self, listener: Callable[[ServedIndex], None]) -> None:
        """Calls ``listener(served)`` after every swap (and at once if an index is already served)."""
        self._swap_listeners.append(listener)
        if self._current is not None:
            listener(self._current)

    def check_once(self) -> bool:
        """Loads and swaps in the version CURRENT names if it is new; returns True when it swapped."""
        with self._check_lock:
            version = self._read_current()
            served = self._current
            if version is None or (served is not None and served.version == version):
                return False
            failed_at = self._failed_at.get(version)
            if failed_at is not None and time.monotonic() - failed_at < self.retry_seconds:
                return False
            try:
                loaded = self._load(version)
            except Exception as exc:  # any failure keeps the old index serving
                self._failed_at[version] = time.monotonic()
                self.loads_failed += 1
                self.metrics.reloads.labels(outcome="failed").inc()
                log_event(logger, logging.ERROR, "index_load_failed", version=version,
                          serving=served.version if served else None, error=f"{type(exc).__name__}: {exc}")
                return False
            self._failed_at.pop(version, None)
            seconds, frozen = settle_heap()  # here, on the watcher thread, not in a request's path later
            log_event(logger, logging.INFO, "heap_settled", seconds=round(seconds, 3), objects_frozen=frozen)
            self._current = loaded  # the atomic swap
            self.loads_ok += 1
            self.metrics.reloads.labels(outcome="ok").inc()
            self.metrics.served(loaded.version, loaded.model_version, loaded.ntotal)
            log_event(logger, logging.INFO, "index_swapped", version=loaded.version,
                      previous=served.version if served else None, model_version=loaded.model_version,
                      ntotal=loaded.ntotal)
        for listener in self._swap_listeners:
            listener(loaded)
        return True

    def refresh_freshness(self) -> None:
        """Computes the freshness gauges of the served index against the table (on the watcher thread).

        Notes not yet indexed: ids of the served model version in the table that the index lacks.
        Newest embedded_at: from tables that keep it per row (Parquet); NaN for others (Redis).
        Counting the notes not indexed reads every id of the table (1.3 s of CPU for 1M notes, 7 s
        for 4M, taken from the requests), so it is done again only when the served version, the
        table's count or its newest embedded_at changed, and at least every ``FULL_RECOUNT`` checks.
        """
        served = self._current
        if served is None:
            return
        created = parse_time(manifest_field(served.index.manifest, "created_at")) or served.loaded_at
        try:
            newest = None
            newest_of = getattr(self.table, "newest_embedded_at", None)
            if newest_of is not None:
                newest = newest_of(served.model_version, not_after=created + 1.0)
            changes = (served.version, self.table.count(served.model_version),
                       newest_of(served.model_version) if newest_of is not None else None)
            if changes != self._freshness_changes or self._recounts_skipped >= FULL_RECOUNT:
                ids = served.index.ids
                self._not_indexed = sum(1 for note_id in self.table.has_ids(served.model_version)
                                        if note_id not in ids)
                self._freshness_changes, self._recounts_skipped = changes, 0
            else:
                self._recounts_skipped += 1
        except Exception as exc:  # a table that is down leaves the last figures in place
            log_event(logger, logging.WARNING, "freshness_check_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._freshness_at = time.monotonic()
        self.metrics.freshness(created, newest, self._not_indexed, time.time())

    def _read_current(self) -> str | None:
        try:
            version = self.store.current_version()
        except Exception as exc:  # an index directory without CURRENT yet: wait for the first build
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_current_error:
                log_event(logger, logging.WARNING, "index_current_unreadable", error=message)
                self._last_current_error = message
            return None
        self._last_current_error = None
        return version or None

    def _load(self, version: str) -> ServedIndex:
        started = time.perf_counter()
        loaded = self.store.load(version)
        manifest = loaded.manifest
        model_version = str(manifest_field(manifest, "model_version"))
        present = self.table.model_versions()
        if model_version not in present:
            raise ValueError(f"index version {version} was built with model version {model_version!r}, "
                             f"but the embedding table {getattr(self.table, 'url', '')} holds "
                             f"{sorted(present) or 'no model versions'}")
        # Warm the table for this model version (a Parquet table reads its rows once) before serving.
        self.table.get_many([], model_version)
        ntotal = int(manifest_field(manifest, "ntotal", 0) or 0)
        log_event(logger, logging.INFO, "index_loaded", version=version, seconds=round(time.perf_counter() - started, 3))
        return ServedIndex(index=loaded, version=str(getattr(loaded, "version", version)),
                           model_version=model_version, dim=int(manifest_field(manifest, "dim", 0) or 0),
                           ntotal=ntotal, loaded_at=time.time())

    def start(self) -> "IndexHolder":
        """Starts polling CURRENT in the background (the first check runs at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-reload", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                swapped = self.check_once()
                if swapped or time.monotonic() - self._freshness_at >= self.freshness_seconds:
                    self.refresh_freshness()
            except Exception:  # never let the watcher die
                logger.exception("index watcher failed")
            self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        # Hand what was frozen back to the collector, so the interpreter's exit (or the rest of a
        # process that outlives this server) frees it as usual.
        gc.unfreeze()

    def wait_loaded(self, timeout: float) -> bool:
        """Blocks until an index is served or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while self._current is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._current is not None
