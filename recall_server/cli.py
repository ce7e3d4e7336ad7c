"""``i2i serve`` (the recall server) and ``i2i recall`` (its command-line client)."""
from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import datetime

import grpc

from i2i.core.cmdline import ArgumentParser
from i2i.core.errors import Failure, I2IError, InputError, TemporaryError
from recall_server.config import MERGE_STRATEGIES, SEARCH_MODES, ServerConfig, read_tokens

logger = logging.getLogger("recall_server.cli")


def serve_parser() -> ArgumentParser:
    defaults = ServerConfig(index_dir="", table_url="")
    p = ArgumentParser(prog="i2i serve", description="gRPC recall server: Recall(user history) -> merged top-k notes "
                "from one batched ANN search over the history embeddings. Hot-reloads INDEX_DIR/CURRENT.")
    p.add_argument("--index-dir", required=True, help="index directory (CURRENT + versions/)")
    p.add_argument("--table", required=True, help="embedding table: parquet:DIR or redis://host:port/db")
    p.add_argument("--host", default=defaults.host, help="address to listen on (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=defaults.port, help="port (0 = any free port; default: %(default)s)")
    p.add_argument("--max-history", type=int, default=defaults.max_history,
                   help="history notes used per request; longer histories keep the most recent (default: %(default)s)")
    p.add_argument("--max-k", type=int, default=defaults.max_k, help="largest k a request may ask for (default: %(default)s)")
    p.add_argument("--per-query-k", type=int, default=defaults.default_per_query_k,
                   help="neighbours per history note when the request says 0; 0 = k, which makes max merging "
                        "exact (exclusions are applied inside the search; default: %(default)s)")
    p.add_argument("--max-per-query-k", type=int, default=defaults.max_per_query_k, help="default: %(default)s")
    p.add_argument("--merge", choices=MERGE_STRATEGIES, default=defaults.merge,
                   help="how per-history lists are merged (default: %(default)s)")
    p.add_argument("--recency-half-life", type=float, default=None,
                   help="weight history position p by 0.5**(p/H) (0 = most recent); default: no weighting")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists probed per query (default: the index's own)")
    p.add_argument("--max-nprobe", type=int, default=defaults.max_nprobe,
                   help="largest nprobe a request may ask for (default: %(default)s)")
    p.add_argument("--max-exclude", type=int, default=defaults.max_exclude,
                   help="most note ids a request may list in exclude (default: %(default)s)")
    p.add_argument("--search-mode", choices=SEARCH_MODES, default=defaults.search_mode,
                   help="batched: one FAISS call for all history notes; per_note: one call each, the slower "
                        "baseline of bench/recall_load.py (default: %(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=defaults.max_message_bytes, help="default: %(default)s")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain; with --tls-key serves TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key")
    p.add_argument("--auth-tokens-file", default=None,
                   help="file of accepted bearer tokens, one per line; without it no token is required")
    p.add_argument("--table-timeout", type=float, default=defaults.table_timeout_seconds,
                   help="seconds a history lookup may take before the call fails UNAVAILABLE (default: %(default)s)")
    p.add_argument("--reload-interval", type=float, default=defaults.reload_interval_seconds,
                   help="seconds between checks of CURRENT (default: %(default)s)")
    p.add_argument("--reload-retry", type=float, default=defaults.reload_retry_seconds,
                   help="seconds before a version that failed to load is tried again (default: %(default)s)")
    p.add_argument("--freshness-interval", type=float, default=defaults.freshness_interval_seconds,
                   help="seconds between recomputations of the freshness gauges (notes in the table but not "
                        "in the index; newest embedded_at); default: %(default)s")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port (0 = any)")
    p.add_argument("--processes", type=int, default=defaults.processes,
                   help="server processes sharing the port, each with its own copy of the index "
                        "(0 = one per CPU; 1 = no supervisor; default: %(default)s)")
    p.add_argument("--max-memory-mb", type=float, default=defaults.max_memory_mb,
                   help="memory the server processes may use together; with --processes 0 their count is "
                        "lowered to what fits, measured on the first process once it has loaded its index "
                        "(0 = what the machine or its cgroup has available; default: %(default)s)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="request threads per process (0 = by table: 1 for Parquet, 2 for Redis, whose "
                        "lookups wait on the network; default: %(default)s)")
    p.add_argument("--neighbour-cache-mb", type=float, default=defaults.neighbour_cache_mb,
                   help="memory for the history notes' neighbour lists, per index version (0 = off; "
                        "default: %(default)s)")
    p.add_argument("--search-threads", type=int, default=defaults.search_threads,
                   help="FAISS threads per search (default: %(default)s)")
    p.add_argument("--grace", type=float, default=defaults.grace_seconds,
                   help="seconds SIGTERM waits for requests in flight (default: %(default)s)")
    p.add_argument("--access-log", action="store_true", help="log one JSON line per request")
    p.add_argument("--wait-for-index", type=float, default=0.0,
                   help="seconds to wait for the first index before reporting ready (0 = do not wait)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        index_dir=args.index_dir, table_url=args.table, host=args.host, port=args.port,
        max_history=args.max_history, max_k=args.max_k, default_per_query_k=args.per_query_k,
        max_per_query_k=args.max_per_query_k, merge=args.merge, recency_half_life=args.recency_half_life,
        nprobe=args.nprobe, max_nprobe=args.max_nprobe, max_exclude=args.max_exclude, search_mode=args.search_mode,
        max_message_bytes=args.max_message_bytes, tls_cert=args.tls_cert,
        tls_key=args.tls_key, auth_tokens=read_tokens(args.auth_tokens_file) if args.auth_tokens_file else (),
        table_timeout_seconds=args.table_timeout, reload_interval_seconds=args.reload_interval, reload_retry_seconds=args.reload_retry,
        freshness_interval_seconds=args.freshness_interval,
        metrics_port=args.metrics_port, processes=args.processes, max_memory_mb=args.max_memory_mb,
        workers=args.workers, neighbour_cache_mb=args.neighbour_cache_mb, search_threads=args.search_threads,
        grace_seconds=args.grace, access_log=args.access_log,
    ).validate()


def serve_main(argv: list[str]) -> int:
    """Runs the server until SIGTERM/SIGINT, then drains and prints a summary."""
    args = serve_parser().parse_args(argv)
    config = config_from_args(args)
    from recall_server.server import RecallServer

    if not config.loopback_only and not (config.tls and config.auth_tokens):
        logger.warning("listening on %s without both TLS and auth tokens: anyone who can reach it can query it",
                       config.host)
    if config.process_count > 1:
        from recall_server.processes import ServerGroup

        server = ServerGroup(config, wait_for_index=args.wait_for_index).start()
        loaded, processes = server.loaded, server.count
    else:
        server = RecallServer(config).start(args.wait_for_index)
        loaded, processes = server.holder.current is not None, 1
    if args.wait_for_index > 0 and not loaded:
        logger.warning("no index loaded after %.1f s; serving NOT_SERVING until one loads", args.wait_for_index)
    # The first line on stdout tells scripts (and tests) where the server listens.
    print(f"i2i serve: listening on {server.address} (tls={'on' if config.tls else 'off'}, "
          f"auth={'on' if config.auth_tokens else 'off'}, merge={config.merge}, processes={processes}, "
          f"threads={config.request_threads}"
          + (f", metrics on :{server.metrics_port}" if server.metrics_port is not None else "") + ")", flush=True)
    server.serve_until_signal()
    s = server.summary()
    print(f"i2i serve: stopped after {s['uptime_seconds']} s: {s['requests']} requests ({s['ok']} ok, "
          f"{s['errors']} errors), index {s['index_version']}, reloads {s['reloads_ok']} ok / "
          f"{s['reloads_failed']} failed" + (f", {s['restarts']} process restarts" if "restarts" in s else ""),
          flush=True)
    return 0


def recall_parser() -> ArgumentParser:
    p = ArgumentParser(prog="i2i recall", description="Ask a recall server for notes related to a history.")
    p.add_argument("--server", required=True, help="HOST:PORT of the recall server")
    p.add_argument("--history", required=True, action="append",
                   help="history note ids, most recent first, comma-separated (may be repeated)")
    p.add_argument("--k", type=int, default=10, help="results wanted (default: %(default)s)")
    p.add_argument("--per-query-k", type=int, default=0, help="neighbours per history note (0 = server default)")
    p.add_argument("--include-history", action="store_true", help="keep history notes in the results")
    p.add_argument("--nprobe", type=int, default=0, help="IVF lists probed per history note (0 = server default)")
    p.add_argument("--exclude", action="append", default=[],
                   help="note ids to leave out besides the history, comma-separated (may be repeated)")
    p.add_argument("--published-after", default=None,
                   help="only notes published at or after this ISO 8601 time (UTC unless it has an offset)")
    p.add_argument("--user-id", default="", help="user id, for the server's logs")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default: %(default)s)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token (or set I2I_RECALL_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="PEM CA certificate: connect with TLS and verify the server")
    p.add_argument("--tls-server-name", default=None, help="name expected in the server's certificate")
    return p


# gRPC codes that pass by themselves (server down or overloaded, deadline): a scheduler retries them.
TEMPORARY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
INPUT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def status_error(code: grpc.StatusCode, details: str) -> I2IError:
    """The error kind (and so the exit code) for a failed call: 2 refused input, 75 retry later, 1 else."""
    kind = TemporaryError if code in TEMPORARY_CODES else InputError if code in INPUT_CODES else Failure
    return kind(f"{code.name}: {details}")


def recall_main(argv: list[str]) -> int:
    """One Recall call; prints the results as a table. Exits 2 for a request the server refused as
    invalid, 75 for a server that is unavailable or too slow (retry later), 1 for other failures."""
    args = recall_parser().parse_args(argv)
    from recall_server.client import ClientConfig, RecallClient, format_table

    history = [note_id.strip() for chunk in args.history for note_id in chunk.split(",") if note_id.strip()]
    if not history:
        raise InputError("--history holds no note ids")
    token = os.environ.get("I2I_RECALL_TOKEN")
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()
        except OSError as exc:
            raise InputError(f"cannot read token file {args.token_file}: {exc}") from exc
    if args.tls_ca and not os.path.isfile(args.tls_ca):
        raise InputError(f"--tls-ca {args.tls_ca} not found")
    exclude = [note_id.strip() for chunk in args.exclude for note_id in chunk.split(",") if note_id.strip()]
    published_after = None
    if args.published_after:
        try:
            published_after = datetime.fromisoformat(args.published_after.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"--published-after {args.published_after!r} is not an ISO 8601 time "
                             "(e.g. 2024-05-01T00:00:00Z)") from None
    config = ClientConfig(target=args.server, token=token, tls_ca=args.tls_ca, tls_server_name=args.tls_server_name,
                          timeout_seconds=args.timeout)
    started = time.perf_counter()
    with RecallClient(config) as client:
        try:
            response = client.recall(history, k=args.k, per_query_k=args.per_query_k,
                                     exclude_history=False if args.include_history else None, user_id=args.user_id,
                                     nprobe=args.nprobe, exclude=exclude, published_after=published_after)
        except grpc.RpcError as exc:
            raise status_error(exc.code(), exc.details()) from None
    print(format_table(response))
    print(f"i2i recall: {len(response.notes)} notes for {len(history)} history notes from {args.server} "
          f"in {(time.perf_counter() - started) * 1000:.1f} ms")
    return 0
