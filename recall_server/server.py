"""Wiring of the gRPC server: the recall service, health, reflection, auth, TLS, metrics and drain.

Health reports NOT_SERVING until the first index is loaded and again once shutdown begins, so
a load balancer stops routing before requests are refused. On SIGTERM the server stops taking
new calls and waits up to ``grace_seconds`` for the calls in flight.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from index.native_threads import limit_blas_threads, limit_omp_threads
from recall_server.auth import BearerTokenInterceptor
from recall_server.config import ServerConfig, host_port
from recall_server.grpc_metrics import GrpcServerMetrics
from recall_server.holder import IndexHolder, ServedIndex
from recall_server.logs import log_event
from recall_server.metrics import RecallMetrics
from recall_server.service import RecallService, add_to_server
from recall_server.stubs import recall_pb2

logger = logging.getLogger("recall_server.server")

SERVICE_NAME = recall_pb2.DESCRIPTOR.services_by_name["RecallService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)


class RecallServer:
    """One running recall server; ``start()``, then ``stop()`` (or ``serve_until_signal()``)."""

    def __init__(self, config: ServerConfig, table: Any = None, store: Any = None, bind_at_start: bool = False) -> None:
        """Binds the port now (a port in use fails here), or with ``bind_at_start`` in ``start()``
        once the index has loaded: a process joining a group's shared port takes no calls before."""
        self.config = config
        self.metrics = RecallMetrics()
        if table is None:
            from embedding.table import open_table

            table = open_table(config.table_url)
        if store is None:
            from index.store import IndexStore

            store = IndexStore(config.index_dir)
        self.table = table
        self.holder = IndexHolder(store, table, self.metrics, poll_seconds=config.reload_interval_seconds,
                                  retry_seconds=config.reload_retry_seconds,
                                  freshness_seconds=config.freshness_interval_seconds)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        for name in HEALTH_SERVICES:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        interceptors: list[grpc.ServerInterceptor] = [GrpcServerMetrics(self.metrics.registry)]
        if config.auth_tokens:
            interceptors.append(BearerTokenInterceptor(
                config.auth_tokens, on_reject=lambda method: self.metrics.unauthenticated.labels(method=method).inc()))
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.so_reuseport", 1 if config.reuse_port else 0)]
        # Every request thread caps its own OpenMP team (the setting is per thread).
        pool = futures.ThreadPoolExecutor(max_workers=config.request_threads, thread_name_prefix="recall",
                                          initializer=limit_omp_threads, initargs=(config.search_threads,))
        self._grpc = grpc.server(pool, interceptors=interceptors, options=options)
        self.service = RecallService(config, self.holder, table, self.metrics)
        add_to_server(self.service, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._grpc)
        self.port = 0
        if not bind_at_start:
            self._bind()
        self.metrics_port: int | None = None
        self.started_at: float | None = None
        self._stopped = threading.Event()

    def _bind(self) -> None:
        config = self.config
        address = host_port(config.host, config.port)
        try:
            if config.tls:
                credentials = grpc.ssl_server_credentials(
                    [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
                self.port = self._grpc.add_secure_port(address, credentials)
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            self.port = 0
            bind_error = str(exc)
        else:
            bind_error = "port in use or address not local"
        if not self.port:
            from i2i.core.errors import InputError

            raise InputError(f"cannot listen on {address}: {bind_error}")

    @property
    def address(self) -> str:
        return host_port(self.config.host, self.port)

    def start(self, wait_for_index: float = 0.0) -> "RecallServer":
        """Starts loading the index and serving; with ``wait_for_index`` the port takes calls once an
        index is loaded or that many seconds have passed (callers that connect meanwhile wait in the
        listen queue instead of being answered UNAVAILABLE)."""
        limit_blas_threads(self.config.search_threads)
        limit_omp_threads(self.config.search_threads)
        self.holder.on_swap(self._index_swapped)
        self.holder.start()
        if wait_for_index > 0:
            self.holder.wait_loaded(wait_for_index)
        if not self.port:
            self._bind()
        self._grpc.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.config.metrics_port, self.config.host)
        self.started_at = time.monotonic()
        log_event(logger, logging.INFO, "server_started", address=self.address, tls=self.config.tls,
                  auth=bool(self.config.auth_tokens), metrics_port=self.metrics_port,
                  index_dir=self.config.index_dir, table=getattr(self.table, "url", self.config.table_url))
        return self

    def _index_swapped(self, served: ServedIndex) -> None:
        if not self._stopped.is_set():
            for name in HEALTH_SERVICES:
                self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Refuses new calls, lets calls in flight finish (up to ``grace`` seconds), then releases everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        log_event(logger, logging.INFO, "server_draining", grace_seconds=grace)
        self._grpc.stop(grace).wait()
        self.service.close()
        self.holder.stop()
        self.metrics.close()
        close = getattr(self.table, "close", None)
        if close is not None:
            close()
        log_event(logger, logging.INFO, "server_stopped", **self.summary())

    def summary(self) -> dict[str, Any]:
        """Counts for the closing line of ``i2i serve``."""
        served = self.holder.current
        value = self.metrics.value
        ok = value("i2i_recall_requests_total", {"code": "OK"})
        total = sum(sample.value for metric in self.metrics.requests.collect() for sample in metric.samples
                    if sample.name.endswith("_total"))
        return {
            "requests": int(total),
            "ok": int(ok),
            "errors": int(total - ok),
            "index_version": served.version if served else None,
            "reloads_ok": self.holder.loads_ok,
            "reloads_failed": self.holder.loads_failed,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
        }

    def serve_until_signal(self, stop: threading.Event | None = None) -> None:
        """Blocks until SIGTERM or SIGINT (or ``stop`` is set), then drains; for the main thread of ``i2i serve``."""
        received = stop or threading.Event()

        def on_signal(signum, _frame):
            log_event(logger, logging.INFO, "signal", signal=signal.Signals(signum).name)
            received.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not received.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stop()
