"""A recall server in a child process, with the client calls the demo and end-to-end tests need."""
from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from recall_server.client import ClientConfig, RecallClient
from recall_server.stubs import recall_pb2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TrafficCounts:
    ok: int = 0
    failed: int = 0


class ServerProcess:
    """Runs ``i2i serve`` on a free loopback port; ``stop()`` sends SIGTERM so it drains."""

    def __init__(self, index_dir: Path, table_url: str, extra_args: list[str] | None = None,
                 startup_timeout: float = 120.0) -> None:
        self.index_dir = Path(index_dir)
        self.table_url = table_url
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.client: RecallClient | None = None

    def start(self) -> "ServerProcess":
        command = [sys.executable, "-m", "i2i.app.cli", "serve", "--index-dir", str(self.index_dir),
                   "--table", self.table_url, "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        self.process = subprocess.Popen(command)
        self.client = RecallClient(ClientConfig(self.address))
        self.wait_serving()
        return self

    def wait_serving(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(self.client.channel)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"recall server exited with {self.process.returncode} during start-up")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"recall server on {self.address} not SERVING after {self.startup_timeout}s")

    def recall(self, history: list[str], k: int, user_id: str = "", timeout: float = 10.0,
               **fields) -> recall_pb2.RecallResponse:
        return self.client.recall(history, k, user_id=user_id, timeout=timeout, **fields)

    def index_version(self) -> str:
        return (self.index_dir / "CURRENT").read_text().strip()

    def wait_for_reload(self, previous: str, probe: list[str], timeout: float = 60.0) -> str:
        """Waits until the server answers ``probe`` (any known history) from the version CURRENT names."""
        wanted = self.index_version()
        if wanted == previous:
            raise RuntimeError(f"CURRENT still names {previous}: nothing to reload")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.recall(probe, 1, timeout=5.0).index_version == wanted:
                    return wanted
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not reload {wanted} within {timeout}s")

    @contextlib.contextmanager
    def background_traffic(self, events: pa.Table, history_length: int = 5,
                           timeout: float = 5.0) -> Iterator[TrafficCounts]:
        """Sends recall requests from real histories in a thread until the block ends."""
        clicks = events.filter(pc.equal(events.column("action"), "click")).column("note_id").to_pylist()
        counts = TrafficCounts()
        stop = threading.Event()
        rng = random.Random(0)

        def loop() -> None:
            while not stop.is_set():
                start = rng.randrange(max(1, len(clicks) - history_length))
                try:
                    self.recall(clicks[start:start + history_length], 20, timeout=timeout)
                    counts.ok += 1
                except grpc.RpcError:
                    counts.failed += 1

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield counts
        finally:
            stop.set()
            thread.join(timeout=timeout + 1)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return None if self.process is None else self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
