"""Benchmark: the recall server under concurrent load, batched multi-ANN search against one search per note.

Builds (once, cached) a 1M-note 64-d embedding table (Parquet) of clustered random unit vectors
and an IVF index over it with the index package's builder. Then, for each search mode, starts
``i2i serve`` as its own process on loopback and drives it with closed-loop clients (grpc.aio,
spread over a few processes) that each send Recall(history of 50 notes, k=200) back to back for
a fixed time. Prints QPS, p50/p95/p99 latency and errors per mode, and the ratios of the
per-note baseline to the batched server, both measured in this run.

    python bench/recall_load.py [--notes 1000000] [--dim 64] [--nlist 0 (auto)] [--nprobe 8]
                                [--history 50] [--k 200] [--concurrency 8] [--client-processes 2]
                                [--duration 10] [--warmup 2] [--cache-dir DIR] [--modes batched,per_note]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_VERSION = "bench-m1"
TARGET_P99_MS = 20.0


@dataclass
class BenchConfig:
    notes: int = 1_000_000
    dim: int = 64
    clusters: int = 2000
    nlist: int = 0  # 0 = the index builder's own choice (about 4 sqrt(notes): 4096 for 1M)
    nprobe: int = 8
    history: int = 50
    k: int = 200
    concurrency: int = 8
    client_processes: int = 2
    duration: float = 10.0
    warmup: float = 2.0
    histories: int = 2000
    rate: float = 0.0  # 0 = closed loop (each client sends again as soon as it has an answer); else total requests/s
    seed: int = 42
    cache_dir: Path = Path(tempfile.gettempdir()) / "i2i-bench-recall-load"
    modes: tuple[str, ...] = ("batched", "per_note")


# --------------------------------------------------------------------------- data and index
def note_id(i: int) -> str:
    return f"note-{i:07d}"


def clustered_vectors(cfg: BenchConfig, start: int, stop: int, centers: np.ndarray) -> np.ndarray:
    """Rows start..stop of the corpus: a cluster centre plus noise, L2-normalised (deterministic per row block)."""
    rng = np.random.default_rng([cfg.seed, start])
    cluster = rng.integers(0, len(centers), size=stop - start)
    vectors = centers[cluster] + 0.35 * rng.standard_normal((stop - start, cfg.dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def prepare(cfg: BenchConfig) -> tuple[Path, str]:
    """Returns (index_dir, table_url), building them under the cache directory on first use."""
    from embedding.table import open_table
    from index.builder import BuildConfig
    from index.jobs import build_from_embeddings
    from index.source import Embeddings
    from index.store import IndexStore

    work = cfg.cache_dir / f"notes{cfg.notes}-dim{cfg.dim}-clusters{cfg.clusters}-nlist{cfg.nlist}-seed{cfg.seed}"
    index_dir, table_dir, ready = work / "index", work / "table", work / "READY"
    table_url = f"parquet:{table_dir}"
    if ready.exists():
        print(f"using cached table and index in {work}")
        return index_dir, table_url
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    centers = np.random.default_rng(cfg.seed).standard_normal((cfg.clusters, cfg.dim)).astype(np.float32)
    ids = [note_id(i) for i in range(cfg.notes)]
    vectors = np.empty((cfg.notes, cfg.dim), dtype=np.float32)
    block = 250_000
    with open_table(table_url) as table:
        for start in range(0, cfg.notes, block):
            stop = min(cfg.notes, start + block)
            vectors[start:stop] = clustered_vectors(cfg, start, stop, centers)
            table.put_many(ids[start:stop], vectors[start:stop], MODEL_VERSION)
            print(f"  table: {stop:,}/{cfg.notes:,} embeddings written", flush=True)
    print(f"table written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    store = IndexStore(index_dir)
    with store.writer_lock():
        summary = build_from_embeddings(store, Embeddings(ids, vectors, MODEL_VERSION),
                                        BuildConfig(factory="Flat", nlist=cfg.nlist or None, default_nprobe=cfg.nprobe))
    print(f"index {summary.version} ({summary.factory}, {summary.ntotal:,} notes) built in "
          f"{time.perf_counter() - started:.1f} s")
    ready.write_text("ok\n")
    return index_dir, table_url


def sample_histories(cfg: BenchConfig) -> list[list[str]]:
    rng = np.random.default_rng(cfg.seed + 1)
    return [[note_id(int(i)) for i in rng.choice(cfg.notes, size=cfg.history, replace=False)]
            for _ in range(cfg.histories)]


# --------------------------------------------------------------------------- server
def start_server(cfg: BenchConfig, index_dir: Path, table_url: str, mode: str) -> tuple[subprocess.Popen, str]:
    i2i = str(Path(sys.executable).parent / "i2i")
    process = subprocess.Popen(
        [i2i, "serve", "--index-dir", str(index_dir), "--table", table_url, "--port", "0",
         "--search-mode", mode, "--nprobe", str(cfg.nprobe), "--max-history", str(cfg.history),
         "--workers", str(max(8, cfg.concurrency)), "--wait-for-index", "300", "--table-timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+:\d+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"i2i serve did not start: {line!r}")
    return process, match.group(1)


def wait_serving(target: str, timeout: float = 300.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"server at {target} never became SERVING")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to charge the server per request."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return out.strip().splitlines()[-1] if out.strip() else ""


# --------------------------------------------------------------------------- clients
def client_process(target: str, histories: list[list[str]], loops: int, k: int, warmup: float, duration: float,
                   offset: int, interval: float, results) -> None:
    """Runs ``loops`` callers on one aio channel; sends (latencies, errors) back.

    ``interval`` 0: closed loop. Otherwise each caller has a send schedule every ``interval``
    seconds and latency counts from the scheduled time, so a server that falls behind is charged
    for the queueing it causes.
    """
    import grpc

    from recall_server.stubs import recall_pb2, recall_pb2_grpc

    async def main():
        latencies: list[float] = []
        errors: dict[str, int] = {}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = recall_pb2_grpc.RecallServiceStub(channel)
            begin = time.perf_counter()
            measure_from, end = begin + warmup, begin + warmup + duration

            async def loop(slot: int):
                i = offset + slot * 7919
                scheduled = begin + (interval * slot / max(loops, 1))
                while True:
                    now = time.perf_counter()
                    if now >= end:
                        return
                    if interval:
                        if scheduled > now:
                            await asyncio.sleep(scheduled - now)
                        started = scheduled
                        scheduled += interval
                    request = recall_pb2.RecallRequest(user_id=f"u{i}", history=histories[i % len(histories)], k=k)
                    i += 1
                    if not interval:
                        started = time.perf_counter()
                    try:
                        await stub.Recall(request, timeout=5)
                        code = None
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code().name
                    finished = time.perf_counter()
                    if started >= measure_from and finished <= end:
                        latencies.append(finished - started)
                        if code is not None:
                            errors[code] = errors.get(code, 0) + 1

            await asyncio.gather(*(loop(slot) for slot in range(loops)))
        return latencies, errors

    results.put(asyncio.run(main()))


def drive(cfg: BenchConfig, target: str, histories: list[list[str]]) -> dict:
    context = mp.get_context("spawn")
    results = context.Queue()
    per_process = [cfg.concurrency // cfg.client_processes + (1 if p < cfg.concurrency % cfg.client_processes else 0)
                   for p in range(cfg.client_processes)]
    interval = cfg.concurrency / cfg.rate if cfg.rate > 0 else 0.0
    processes = [context.Process(target=client_process,
                                 args=(target, histories, loops, cfg.k, cfg.warmup, cfg.duration, p * 104729, interval,
                                       results))
                 for p, loops in enumerate(per_process) if loops]
    for process in processes:
        process.start()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for _ in processes:
        got_latencies, got_errors = results.get(timeout=cfg.warmup + cfg.duration + 120)
        latencies += got_latencies
        for code, count in got_errors.items():
            errors[code] = errors.get(code, 0) + count
    for process in processes:
        process.join(timeout=30)
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "qps": len(ms) / cfg.duration, "errors": sum(errors.values()), "by_code": errors,
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan")}


# --------------------------------------------------------------------------- main
def parse(argv: list[str]) -> BenchConfig:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("notes", "dim", "clusters", "nlist", "nprobe", "history", "k", "concurrency", "client_processes",
                 "histories", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--rate", type=float, default=d.rate,
                   help="offered load in requests/s over all clients (open loop); 0 = closed loop")
    p.add_argument("--duration", type=float, default=d.duration, help="measured seconds per mode")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds before each measurement")
    p.add_argument("--cache-dir", type=Path, default=d.cache_dir, help="where the table and index are kept")
    p.add_argument("--modes", default=",".join(d.modes), help="search modes to run, batched first")
    args = p.parse_args(argv)
    values = {name: getattr(args, name) for name in vars(args)}
    values["modes"] = tuple(mode for mode in args.modes.split(",") if mode)
    return BenchConfig(**values)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(sys.argv[1:] if argv is None else argv)
    loop = f"open loop at {cfg.rate:.0f} requests/s" if cfg.rate > 0 else "closed loop"
    print(f"recall load: {cfg.notes:,} notes x {cfg.dim}-d, IVF nlist={cfg.nlist or 'auto'} nprobe={cfg.nprobe}, "
          f"history {cfg.history}, k {cfg.k}, {cfg.concurrency} concurrent clients in {cfg.client_processes} "
          f"processes ({loop}), {cfg.duration:.0f} s measured after {cfg.warmup:.0f} s warm-up, {os.cpu_count()} CPUs")
    index_dir, table_url = prepare(cfg)
    histories = sample_histories(cfg)
    figures: dict[str, dict] = {}
    for mode in cfg.modes:
        started = time.perf_counter()
        process, target = start_server(cfg, index_dir, table_url, mode)
        try:
            wait_serving(target)
            print(f"[{mode}] server {target} ready in {time.perf_counter() - started:.1f} s; driving load", flush=True)
            cpu_before = cpu_seconds(process.pid)
            figures[mode] = drive(cfg, target, histories)
            server_cpu = cpu_seconds(process.pid) - cpu_before
            # The window covers warm-up too, so charge every request the server answered in it.
            answered = figures[mode]["requests"] * (cfg.warmup + cfg.duration) / cfg.duration
            figures[mode]["server_cpu_ms"] = 1000 * server_cpu / max(answered, 1)
        finally:
            closing = stop_server(process)
        f = figures[mode]
        print(f"[{mode}] {f['requests']} requests, {f['qps']:.1f} QPS, p50 {f['p50']:.2f} ms, p95 {f['p95']:.2f} ms, "
              f"p99 {f['p99']:.2f} ms, errors {f['errors']} {f['by_code'] or ''}, "
              f"server CPU {f['server_cpu_ms']:.2f} ms/request")
        print(f"[{mode}] {closing}")
    print()
    print(f"{'mode':<10} {'requests':>9} {'QPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'srv CPU ms/req':>15}")
    for mode, f in figures.items():
        print(f"{mode:<10} {f['requests']:>9} {f['qps']:>8.1f} {f['p50']:>8.2f} {f['p95']:>8.2f} {f['p99']:>8.2f} "
              f"{f['errors']:>7} {f['server_cpu_ms']:>15.2f}")
    if "batched" in figures and "per_note" in figures:
        b, n = figures["batched"], figures["per_note"]
        print(f"ratio per_note/batched: p50 {n['p50'] / b['p50']:.2f}x, p99 {n['p99'] / b['p99']:.2f}x, "
              f"server CPU {n['server_cpu_ms'] / b['server_cpu_ms']:.2f}x; QPS batched/per_note {b['qps'] / n['qps']:.2f}x")
    if "batched" in figures:
        b = figures["batched"]
        verdict = "met" if b["p99"] <= TARGET_P99_MS and b["errors"] == 0 else "NOT met"
        print(f"target p99 <= {TARGET_P99_MS:.0f} ms with zero errors at {cfg.concurrency} clients: {verdict} "
              f"(p99 {b['p99']:.2f} ms, {b['errors']} errors)")
    print(f"machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(latency figures include any other work sharing the CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
