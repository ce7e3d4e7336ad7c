"""Benchmark: how fast the recall server answers UNAVAILABLE while its Redis table is down or hung.

Starts redis-server and ``i2i serve`` (a Redis table, ``--table-timeout``) on loopback, then
times Recall calls in four states: Redis healthy (the reference), Redis stopped, Redis paused
(``CLIENT PAUSE``: it accepts but does not answer) under a deadline above the table budget, and
paused under a deadline below it. Prints the median and max of each, the ratio to the healthy
median and to the caller's deadline. The tests check the status codes; the times live here.

    python bench/redis_outage.py [--calls 20] [--table-timeout 0.5] [--notes 2000]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedding.table import open_table  # noqa: E402
from i2i.testing.serving import ServerProcess, free_port  # noqa: E402
from index import jobs  # noqa: E402
from index.builder import BuildConfig  # noqa: E402

MODEL = "bench-m1"


@dataclass
class OutageConfig:
    calls: int = 20
    table_timeout: float = 0.5
    notes: int = 2000
    dim: int = 32


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (scripts/setup_env.sh installs it)")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    sys.exit(f"redis-server did not start on port {port}")


def timed_calls(server: ServerProcess, history: list[str], calls: int, deadline: float) -> tuple[list[float], set[str]]:
    seconds, codes = [], set()
    for _ in range(calls):
        started = time.perf_counter()
        try:
            server.recall(history, 10, timeout=deadline)
            codes.add("OK")
        except grpc.RpcError as exc:
            codes.add(exc.code().name)
        seconds.append(time.perf_counter() - started)
    return seconds, codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=OutageConfig.calls)
    parser.add_argument("--table-timeout", type=float, default=OutageConfig.table_timeout)
    parser.add_argument("--notes", type=int, default=OutageConfig.notes)
    args = parser.parse_args(argv)
    config = OutageConfig(calls=args.calls, table_timeout=args.table_timeout, notes=args.notes)
    rng = np.random.default_rng(0)
    ids = [f"n{i:05d}" for i in range(config.notes)]
    vectors = rng.standard_normal((config.notes, config.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="i2i-outage-") as tmp:
        workdir, port = Path(tmp), free_port()
        redis_process = start_redis(port, workdir)
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=5&socket_connect_timeout=1"
        try:
            with open_table(url) as table:
                table.put_many(ids, vectors, MODEL)
            jobs.build_job(str(workdir / "index"), url, BuildConfig(nlist=8))
            history = ids[:4]
            rows = []
            with ServerProcess(workdir / "index", url, ["--table-timeout", str(config.table_timeout)]) as server:
                timed_calls(server, history, 3, 5.0)  # warm-up
                rows.append(("healthy", 5.0, *timed_calls(server, history, config.calls, 5.0)))
                admin = redis.Redis(port=port)
                pause_ms = int(1000 * (2.5 * config.calls + 5))
                admin.execute_command("CLIENT", "PAUSE", str(pause_ms), "ALL")
                rows.append(("paused, deadline 2.0 s", 2.0, *timed_calls(server, history, config.calls, 2.0)))
                rows.append(("paused, deadline 0.3 s", 0.3, *timed_calls(server, history, config.calls, 0.3)))
                admin.execute_command("CLIENT", "UNPAUSE")
                admin.close()
                redis_process.terminate()
                redis_process.wait(timeout=10)
                rows.append(("stopped, deadline 3.0 s", 3.0, *timed_calls(server, history, config.calls, 3.0)))
        finally:
            if redis_process.poll() is None:
                redis_process.terminate()
                redis_process.wait(timeout=10)
    reference = statistics.median(rows[0][2])
    print(f"table budget {config.table_timeout} s, {config.calls} calls per state, history of 4 notes")
    print(f"{'state':26} {'codes':22} {'median ms':>10} {'max ms':>8} {'x healthy':>10} {'max/deadline':>13}")
    for name, deadline, seconds, codes in rows:
        median = statistics.median(seconds)
        print(f"{name:26} {','.join(sorted(codes)):22} {median * 1000:10.1f} {max(seconds) * 1000:8.1f} "
              f"{median / reference:10.1f} {max(seconds) / deadline:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
