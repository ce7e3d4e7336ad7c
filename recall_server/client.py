"""A small client for RecallService: channel setup (TLS, bearer token) and one call per ``recall``."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import grpc

from recall_server.stubs import recall_pb2, recall_pb2_grpc


@dataclass
class ClientConfig:
    """Where the server is and how to reach it."""

    target: str  # host:port
    token: str | None = None
    tls_ca: str | None = None  # PEM of the CA (or the server's self-signed certificate); None = plaintext
    tls_server_name: str | None = None  # name to check in the certificate when it differs from the host
    timeout_seconds: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024


def open_channel(config: ClientConfig) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes)]
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    if config.tls_ca is None:
        return grpc.insecure_channel(config.target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(config.tls_ca).read_bytes())
    return grpc.secure_channel(config.target, credentials, options=options)


class RecallClient:
    """``RecallClient(ClientConfig("127.0.0.1:50051")).recall(["n1", "n2"], k=10)``."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.channel = open_channel(config)
        self.stub = recall_pb2_grpc.RecallServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()

    def recall(self, history: Sequence[str], k: int, per_query_k: int = 0, exclude_history: bool | None = None,
               user_id: str = "", timeout: float | None = None, nprobe: int = 0, exclude: Sequence[str] = (),
               published_after: datetime | None = None) -> recall_pb2.RecallResponse:
        """One Recall call; raises grpc.RpcError with the server's status code and message.

        ``published_after`` is an aware datetime (a naive one is taken as UTC).
        """
        request = recall_pb2.RecallRequest(user_id=user_id, history=list(history), k=k, per_query_k=per_query_k,
                                           nprobe=nprobe, exclude=list(exclude))
        if exclude_history is not None:
            request.exclude_history = exclude_history
        if published_after is not None:
            if published_after.tzinfo is None:
                published_after = published_after.replace(tzinfo=timezone.utc)
            request.published_after.FromDatetime(published_after)
        return self.stub.Recall(request, timeout=timeout or self.config.timeout_seconds, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "RecallClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_table(response: recall_pb2.RecallResponse) -> str:
    """The results as an aligned text table, then the index/model versions and missing history."""
    header = ("rank", "note_id", "score", "source_note_id")
    rows = [(str(i), note.note_id, f"{note.score:.4f}", note.source_note_id)
            for i, note in enumerate(response.notes, start=1)]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.append(f"index_version={response.index_version} model_version={response.model_version} "
                 f"results={len(response.notes)}")
    if response.missing_history:
        lines.append(f"missing_history ({len(response.missing_history)}): {', '.join(response.missing_history)}")
    return "\n".join(lines)
