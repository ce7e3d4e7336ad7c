"""Soak benchmark: one ``i2i serve`` process under steady concurrent load for a bounded time,
watching its memory.

Builds (once, cached) a ~100k-note Parquet embedding table of clustered unit vectors and an IVF
index over it, starts ``i2i serve`` on loopback, and drives it with closed-loop clients (grpc.aio,
in a few client processes) for ``--seconds``. Every ``--sample-seconds`` it samples the server's
resident memory (psutil, else /proc/<pid>/status VmRSS). Prints requests, errors by status code,
QPS, p50/p99 latency, RSS at start and end, and the growth in MB and MB per 10k requests, for the
whole run and for its second half alone (least-squares slopes over the samples): warm-up
(allocator pools, caches) shows in the first half only, while a leak keeps the second-half slope
up; the starting RSS measured in the same run is the reference the growth is compared with.

    python bench/soak_server.py [--seconds 120] [--notes 100000] [--dim 64] [--concurrency 8]
                                [--client-processes 2] [--history 20] [--k 50] [--sample-seconds 5]
                                [--cache-dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MODEL_VERSION = "soak-m1"


@dataclass
class SoakConfig:
    seconds: float = 120.0
    notes: int = 100_000
    dim: int = 64
    clusters: int = 500
    concurrency: int = 8  # callers in flight at any time, spread over the client processes
    client_processes: int = 2
    history: int = 20
    k: int = 50
    sample_seconds: float = 5.0
    deadline: float = 5.0  # per call
    histories: int = 5000
    seed: int = 7
    cache_dir: Path = Path(tempfile.gettempdir()) / "i2i-bench-soak"
    server_args: list[str] = field(default_factory=lambda: ["--workers", "8"])


# --------------------------------------------------------------------------- data and index
def note_id(i: int) -> str:
    return f"note-{i:06d}"


def prepare(cfg: SoakConfig) -> tuple[Path, str]:
    """(index_dir, table_url), built under the cache directory on first use."""
    from embedding.table import open_table
    from index import jobs
    from index.builder import BuildConfig

    work = cfg.cache_dir / f"notes{cfg.notes}-dim{cfg.dim}-clusters{cfg.clusters}-seed{cfg.seed}"
    index_dir, table_url, ready = work / "index", f"parquet:{work / 'table'}", work / "READY"
    if ready.exists():
        print(f"using the cached table and index in {work}")
        return index_dir, table_url
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    centres = rng.standard_normal((cfg.clusters, cfg.dim)).astype(np.float32)
    vectors = centres[rng.integers(0, cfg.clusters, cfg.notes)]
    vectors += 0.35 * rng.standard_normal(vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with open_table(table_url) as table:
        table.put_many([note_id(i) for i in range(cfg.notes)], vectors, MODEL_VERSION)
    print(f"table: {cfg.notes:,} embeddings written in {time.perf_counter() - started:.1f} s", flush=True)
    summary = jobs.build_job(str(index_dir), table_url, BuildConfig())
    print("\n".join(summary.lines()), flush=True)
    ready.write_text("ok\n")
    return index_dir, table_url


def sample_histories(cfg: SoakConfig) -> list[list[str]]:
    rng = np.random.default_rng(cfg.seed + 1)
    return [[note_id(int(i)) for i in rng.choice(cfg.notes, size=cfg.history, replace=False)]
            for _ in range(cfg.histories)]


# --------------------------------------------------------------------------- memory
def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread, with a request count beside each."""

    def __init__(self, pid: int, interval: float, progress: "mp.Value") -> None:
        self.pid, self.interval, self.progress = pid, interval, progress
        self.samples: list[tuple[float, float, int]] = []  # (seconds since start, MB, requests so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            self.samples.append((elapsed, rss_mb(self.pid), int(self.progress.value)))
            print(f"  t={elapsed:6.1f}s  rss={self.samples[-1][1]:8.1f} MB  requests={self.samples[-1][2]:,}",
                  flush=True)
            if self._stop.wait(self.interval):
                self.samples.append((time.monotonic() - started, rss_mb(self.pid), int(self.progress.value)))
                return

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- clients
def client_process(target: str, histories: list[list[str]], callers: int, k: int, seconds: float, deadline: float,
                   offset: int, progress, results) -> None:
    """``callers`` closed-loop callers on one aio channel for ``seconds``; sends back latencies and error codes."""
    import grpc

    from recall_server.stubs import recall_pb2, recall_pb2_grpc

    async def main() -> tuple[np.ndarray, dict[str, int], float, float]:
        latencies: list[float] = []
        errors: dict[str, int] = {}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = recall_pb2_grpc.RecallServiceStub(channel)
            begin = time.time()
            end = time.perf_counter() + seconds

            async def caller(slot: int) -> None:
                i = offset + slot * 7919
                while time.perf_counter() < end:
                    request = recall_pb2.RecallRequest(user_id=f"u{i}", history=histories[i % len(histories)], k=k)
                    i += 1
                    started = time.perf_counter()
                    try:
                        await stub.Recall(request, timeout=deadline)
                        latencies.append(time.perf_counter() - started)
                    except grpc.aio.AioRpcError as exc:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    with progress.get_lock():
                        progress.value += 1

            await asyncio.gather(*(caller(slot) for slot in range(callers)))
        return np.asarray(latencies, dtype=np.float64), errors, begin, time.time()

    results.put(asyncio.run(main()))


def drive(cfg: SoakConfig, target: str, histories: list[list[str]],
          progress) -> tuple[np.ndarray, dict[str, int], float]:
    """Runs the client processes; returns (latencies of OK calls, errors by code, seconds under load)."""
    context = mp.get_context("spawn")
    results = context.Queue()
    shares = [cfg.concurrency // cfg.client_processes + (1 if p < cfg.concurrency % cfg.client_processes else 0)
              for p in range(cfg.client_processes)]
    processes = [context.Process(target=client_process,
                                 args=(target, histories, share, cfg.k, cfg.seconds, cfg.deadline, p * 104729,
                                       progress, results))
                 for p, share in enumerate(shares) if share]
    for process in processes:
        process.start()
    gathered = [results.get(timeout=cfg.seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    latencies = np.concatenate([part[0] for part in gathered]) if gathered else np.zeros(0)
    errors: dict[str, int] = {}
    for part in gathered:
        for code, count in part[1].items():
            errors[code] = errors.get(code, 0) + count
    loaded = max(part[3] for part in gathered) - min(part[2] for part in gathered)
    return latencies, errors, loaded


# --------------------------------------------------------------------------- report
def growth(samples: list[tuple[float, float, int]]) -> tuple[float, float]:
    """(MB gained from the first to the last sample, least-squares slope in MB per 10k requests).

    The slope uses every sample, so one early page release or a late allocation burst does not
    decide the verdict alone.
    """
    mb = np.array([s[1] for s in samples])
    requests = np.array([s[2] for s in samples], dtype=np.float64)
    if len(samples) < 2 or np.ptp(requests) == 0:
        return float(mb[-1] - mb[0]), 0.0
    slope = np.polyfit(requests, mb, 1)[0]
    return float(mb[-1] - mb[0]), float(slope * 10_000)


def report(cfg: SoakConfig, latencies: np.ndarray, errors: dict[str, int], wall: float,
           samples: list[tuple[float, float, int]]) -> dict:
    requests = len(latencies) + sum(errors.values())
    whole_mb, whole_per_10k = growth(samples)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    half_mb, half_per_10k = growth(half) if len(half) >= 2 else (0.0, 0.0)
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "requests": requests, "ok": int(len(latencies)), "errors": errors, "seconds": round(wall, 1),
        "qps": round(requests / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2) if len(latencies) else None,
        "rss_start_mb": round(samples[0][1], 1), "rss_end_mb": round(samples[-1][1], 1),
        "rss_max_mb": round(max(s[1] for s in samples), 1),
        "growth_mb": round(whole_mb, 1), "slope_mb_per_10k_requests": round(whole_per_10k, 3),
        "second_half_growth_mb": round(half_mb, 1), "second_half_slope_mb_per_10k_requests": round(half_per_10k, 3),
        "samples": [[round(t, 1), round(mb, 1), n] for t, mb, n in samples],
    }
    print(f"\nsoak: {requests:,} requests in {wall:.1f} s ({result['qps']} QPS), "
          f"{sum(errors.values())} errors {errors or ''}")
    print(f"  latency p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  "
          f"(history {cfg.history}, k {cfg.k}, {cfg.concurrency} callers in flight)")
    print(f"  server RSS: start {result['rss_start_mb']} MB, end {result['rss_end_mb']} MB, "
          f"max {result['rss_max_mb']} MB")
    print(f"  growth: whole run {whole_mb:+.1f} MB (slope {whole_per_10k:+.3f} MB per 10k requests); "
          f"second half {half_mb:+.1f} MB (slope {half_per_10k:+.3f} MB per 10k requests)")
    projected = half_per_10k * 100
    print(f"  at the second-half slope, 1M more requests would add {projected:+.1f} MB "
          f"({projected / samples[0][1] * 100:+.1f}% of the starting RSS)")
    return result


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> tuple[SoakConfig, Path | None]:
    defaults = SoakConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="how long the load runs")
    p.add_argument("--notes", type=int, default=defaults.notes)
    p.add_argument("--dim", type=int, default=defaults.dim)
    p.add_argument("--concurrency", type=int, default=defaults.concurrency, help="callers in flight")
    p.add_argument("--client-processes", type=int, default=defaults.client_processes)
    p.add_argument("--history", type=int, default=defaults.history, help="history notes per request")
    p.add_argument("--k", type=int, default=defaults.k)
    p.add_argument("--sample-seconds", type=float, default=defaults.sample_seconds, help="RSS sampling period")
    p.add_argument("--cache-dir", type=Path, default=defaults.cache_dir)
    p.add_argument("--json", type=Path, help="also write the figures and RSS samples here")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.notes <= 0 or args.concurrency <= 0 or args.client_processes <= 0:
        p.error("--seconds, --notes, --concurrency and --client-processes must be positive")
    cfg = SoakConfig(seconds=args.seconds, notes=args.notes, dim=args.dim, concurrency=args.concurrency,
                     client_processes=min(args.client_processes, args.concurrency), history=args.history, k=args.k,
                     sample_seconds=args.sample_seconds, cache_dir=args.cache_dir)
    return cfg, args.json


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from i2i.testing.serving import ServerProcess

    cfg, json_path = parse_args(argv)
    index_dir, table_url = prepare(cfg)
    histories = sample_histories(cfg)
    server = ServerProcess(index_dir, table_url, [*cfg.server_args, "--max-history", str(cfg.history)],
                           startup_timeout=300)
    with server:
        server.recall(histories[0], cfg.k)  # the table is warm before the first sample
        progress = mp.get_context("spawn").Value("q", 0)
        print(f"soak: {cfg.seconds:.0f} s against {server.address} (pid {server.process.pid}), "
              f"{cfg.notes:,} notes, RSS every {cfg.sample_seconds:.0f} s", flush=True)
        sampler = RssSampler(server.process.pid, cfg.sample_seconds, progress).start()
        latencies, errors, wall = drive(cfg, server.address, histories, progress)
        sampler.stop()
    result = report(cfg, latencies, errors, wall, sampler.samples)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"  figures: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
