"""Bearer-token authentication through call metadata (``authorization: Bearer <token>``).

The health service stays open so load balancers and orchestrators can probe the server without a
secret; every other method, reflection included, needs a valid token.
"""
from __future__ import annotations

import hmac
from typing import Callable, Iterable

import grpc

OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/",)
MISSING_TOKEN = "missing bearer token: send metadata 'authorization: Bearer <token>'"
INVALID_TOKEN = "invalid bearer token"


def _abort_unauthenticated(message: str, like: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``like`` that refuses the call."""

    def handler(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(like.request_streaming, like.response_streaming)]
    return factory(handler, request_deserializer=like.request_deserializer,
                   response_serializer=like.response_serializer)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first ``authorization: Bearer ...`` entry, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED unless the call carries one of the configured tokens."""

    def __init__(self, tokens: Iterable[str], on_reject: Callable[[str], None] | None = None) -> None:
        self._tokens = [token.encode() for token in tokens]
        if not self._tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self._on_reject = on_reject

    def _valid(self, token: str) -> bool:
        candidate = token.encode()
        # Compare against every token so the time taken does not reveal which one nearly matched.
        return sum(hmac.compare_digest(candidate, known) for known in self._tokens) > 0

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            self._reject(method)
            return _abort_unauthenticated(MISSING_TOKEN, handler)
        if not self._valid(token):
            self._reject(method)
            return _abort_unauthenticated(INVALID_TOKEN, handler)
        return handler

    def _reject(self, method: str) -> None:
        if self._on_reject is not None:
            self._on_reject(method)
