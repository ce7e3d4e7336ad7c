"""The recall server's settings, validated once at start so a bad option fails before binding a port."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedding.table import is_in_process
from i2i.core.errors import InputError

MERGE_STRATEGIES = ("max", "sum", "round_robin")
SEARCH_MODES = ("batched", "per_note")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class ServerConfig:
    """Everything ``i2i serve`` can be told; defaults are safe for a single loopback host."""

    index_dir: str
    table_url: str
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = any free port (the bound port is reported)
    max_history: int = 100  # longer histories keep the most recent ones
    max_k: int = 1000
    # Neighbours per history note when the request says 0; 0 here = k, enough for `max` merging to
    # equal an exact search over all history notes (exclusions are applied inside the search).
    default_per_query_k: int = 0
    max_per_query_k: int = 4000
    merge: str = "max"
    # Weight of history position p (0 = most recent) is 0.5 ** (p / half_life); None = no weighting.
    recency_half_life: float | None = None
    nprobe: int | None = None  # None = the index's own default
    max_nprobe: int = 256  # largest nprobe a request may ask for
    max_exclude: int = 1000  # most note ids a request may list in `exclude`
    # "batched": all history notes in one FAISS call; "per_note": one call per history note (the
    # naive way, kept as the benchmark's baseline).
    search_mode: str = "batched"
    max_message_bytes: int = 4 * 1024 * 1024
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_tokens: tuple[str, ...] = field(default_factory=tuple)
    # A history lookup that takes longer (or past the caller's deadline) answers UNAVAILABLE.
    table_timeout_seconds: float = 2.0
    reload_interval_seconds: float = 2.0
    reload_retry_seconds: float = 30.0  # a version that failed to load is retried after this long
    freshness_interval_seconds: float = 60.0  # how often the table-side freshness gauges are recomputed
    metrics_port: int | None = None
    # Server processes sharing the port (SO_REUSEPORT), each with its own index copy, cache and GIL;
    # 0 = one per CPU this process may run on. 1 = this process serves (no supervisor).
    processes: int = 0
    # Memory all the processes may use together, in MiB; 0 = what the machine (or its cgroup) has
    # available at start. With processes = 0 the count is lowered to what fits (each holds its own copy).
    max_memory_mb: float = 0.0
    # Request threads per process; 0 = by table: 1 for an in-process table (Parquet: a request never
    # waits, so a second thread only time-slices the CPU with the first and lengthens the tail), 2 for
    # one across the network (Redis: one thread works while another waits for its answer). Few: the
    # work holds the GIL for part of each request (docs/recall-server.md).
    workers: int = 0
    reuse_port: bool = False  # set for the processes of a group, so they can bind one port together
    # Memory for history notes' unfiltered neighbour lists, per index version (0 = no cache); an entry
    # is about 0.8 KB for 64-d vectors at the first pass's depth of 32 (recall_server/neighbours.py).
    neighbour_cache_mb: float = 256.0
    search_threads: int = 1  # FAISS threads per search; requests already run in parallel
    grace_seconds: float = 10.0  # SIGTERM: how long requests in flight may take to finish
    access_log: bool = False  # one JSON line per request at INFO

    def validate(self) -> "ServerConfig":
        """Raises InputError naming the first bad setting."""
        if not Path(self.index_dir).is_dir():
            raise InputError(f"--index-dir {self.index_dir} is not a directory")
        if self.merge not in MERGE_STRATEGIES:
            raise InputError(f"--merge must be one of {', '.join(MERGE_STRATEGIES)}, got {self.merge!r}")
        if self.search_mode not in SEARCH_MODES:
            raise InputError(f"--search-mode must be one of {', '.join(SEARCH_MODES)}, got {self.search_mode!r}")
        positive = {"--max-history": self.max_history, "--max-k": self.max_k,
                    "--max-per-query-k": self.max_per_query_k, "--max-message-bytes": self.max_message_bytes,
                    "--search-threads": self.search_threads,
                    "--max-nprobe": self.max_nprobe}
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 (by table) or positive, got {self.workers}")
        if self.processes < 0:
            raise InputError(f"--processes must be 0 (one per CPU) or positive, got {self.processes}")
        if self.max_memory_mb < 0:
            raise InputError(f"--max-memory-mb must be 0 (what is available) or positive, got {self.max_memory_mb}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InputError(f"--metrics-port must be in 0..65535, got {self.metrics_port}")
        if self.default_per_query_k < 0 or self.default_per_query_k > self.max_per_query_k:
            raise InputError(f"--per-query-k must be in 0..{self.max_per_query_k}, got {self.default_per_query_k}")
        if self.recency_half_life is not None and self.recency_half_life <= 0:
            raise InputError(f"--recency-half-life must be positive, got {self.recency_half_life}")
        if self.nprobe is not None and not 0 < self.nprobe <= self.max_nprobe:
            raise InputError(f"--nprobe must be in 1..{self.max_nprobe} (--max-nprobe), got {self.nprobe}")
        if self.neighbour_cache_mb < 0:
            raise InputError(f"--neighbour-cache-mb must be 0 (off) or positive, got {self.neighbour_cache_mb}")
        if self.max_exclude < 0:
            raise InputError(f"--max-exclude must not be negative, got {self.max_exclude}")
        if self.table_timeout_seconds <= 0:
            raise InputError(f"--table-timeout must be positive, got {self.table_timeout_seconds}")
        if self.reload_interval_seconds <= 0:
            raise InputError(f"--reload-interval must be positive, got {self.reload_interval_seconds}")
        if self.freshness_interval_seconds <= 0:
            raise InputError(f"--freshness-interval must be positive, got {self.freshness_interval_seconds}")
        if self.grace_seconds < 0:
            raise InputError(f"--grace must not be negative, got {self.grace_seconds}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise InputError(f"TLS file not found: {path}")
        if any(not token for token in self.auth_tokens):
            raise InputError("auth tokens must not be empty")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def request_threads(self) -> int:
        """Request threads per process: ``workers``, or 1 for an in-process table and 2 for a networked one."""
        if self.workers:
            return self.workers
        return 1 if is_in_process(self.table_url) else 2

    @property
    def process_count(self) -> int:
        """Processes to run: ``processes``, or one per CPU this process may run on."""
        if self.processes:
            return self.processes
        import os

        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS


def host_port(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def read_tokens(path: str) -> tuple[str, ...]:
    """Reads bearer tokens, one per line (blank lines and # comments ignored); kept off the command line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read auth token file {path}: {exc}") from exc
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
    if not tokens:
        raise InputError(f"auth token file {path} holds no tokens")
    return tokens
