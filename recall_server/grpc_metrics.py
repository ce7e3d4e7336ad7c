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

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = split_method(handler_call_details.method)
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

    def _finish(self, labels: tuple[str, str, str], context, started: float, failed: bool) -> None:
        code = context.code() if hasattr(context, "code") else None
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        self.handled.labels(*labels, code.name).inc()
        self.seconds.labels(*labels).observe(time.perf_counter() - started)

    def _unary(self, behavior, labels):
        def wrapper(request, context):
            self.started.labels(*labels).inc()
            started, failed = time.perf_counter(), True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._finish(labels, context, started, failed)
        return wrapper

    def _streaming(self, behavior, labels):
        def wrapper(request, context):
            self.started.labels(*labels).inc()
            started, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self._finish(labels, context, started, failed)
        return wrapper
