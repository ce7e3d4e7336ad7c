"""The standard gRPC server metrics (the names of go-grpc-prometheus and grpc-ecosystem), for every method.

``grpc_server_started_total``, ``grpc_server_handled_total{grpc_code}`` and
``grpc_server_handling_seconds`` let the dashboards and alerts written for any gRPC server work on
this one; the project's own ``i2i_recall_*`` metrics stay beside them. The interceptor is the
outermost one, so calls refused by authentication are counted too.
"""
from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from recall_server.metrics import LATENCY_BUCKETS

LABELS = ("grpc_type", "grpc_service", "grpc_method")
WRAPPED_MEMO = 64


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or full_method


class GrpcServerMetrics(grpc.ServerInterceptor):
    """Counts started and handled calls by code and times them, per service and method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("grpc_server_started", "RPCs started on the server", LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code",
                               LABELS + ("grpc_code",), registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds", "Time from start to completion of an RPC",
                                 LABELS, buckets=LATENCY_BUCKETS, registry=registry)
        self._wrapped: dict = {}
        self._handled: dict = {}  # (labels, code) -> its child counter

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        # gRPC asks for the handler on every call; the wrapped one is built once per method and
        # handler (a refused call's handler is new each time, so the memo is bounded).
        key = (handler_call_details.method, handler)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrap(handler_call_details.method, handler)
            if len(self._wrapped) < WRAPPED_MEMO:
                self._wrapped[key] = wrapped
        return wrapped

    def _wrap(self, full_method: str, handler):
        service, method = split_method(full_method)
        kind = {(False, False): "unary", (False, True): "server_stream", (True, False): "client_stream",
                (True, True): "bidi_stream"}[(handler.request_streaming, handler.response_streaming)]
        labels = (kind, service, method)
        if handler.response_streaming:
            behavior = handler.unary_stream or handler.stream_stream
            wrapped = self._streaming(behavior, labels)
        else:
            behavior = handler.unary_unary or handler.stream_unary
            wrapped = self._unary(behavior, labels)
        factory = {
            "unary": grpc.unary_unary_rpc_method_handler, "server_stream": grpc.unary_stream_rpc_method_handler,
            "client_stream": grpc.stream_unary_rpc_method_handler, "bidi_stream": grpc.stream_stream_rpc_method_handler,
        }[kind]
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)

    def _finish(self, labels: tuple[str, str, str], seconds, context, started: float, failed: bool) -> None:
        code = context.code() if hasattr(context, "code") else None
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        handled = self._handled.get((labels, code))
        if handled is None:
            handled = self._handled[(labels, code)] = self.handled.labels(*labels, code.name)
        handled.inc()
        seconds.observe(time.perf_counter() - started)

    def _unary(self, behavior, labels):
        started_total, seconds = self.started.labels(*labels), self.seconds.labels(*labels)  # resolved once

        def wrapper(request, context):
            started_total.inc()
            started, failed = time.perf_counter(), True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._finish(labels, seconds, context, started, failed)
        return wrapper

    def _streaming(self, behavior, labels):
        started_total, seconds = self.started.labels(*labels), self.seconds.labels(*labels)

        def wrapper(request, context):
            started_total.inc()
            started, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self._finish(labels, seconds, context, started, failed)
        return wrapper
