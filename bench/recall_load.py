"""Benchmark: the recall server under concurrent load, today's server against the one before, in one run.

Builds (once, cached) a 1M-note 64-d embedding table (Parquet) of clustered random unit vectors
(``--data tight``: 2,000 clusters of 500; ``--data loose``: clusters of 50) and an index over it
with ``i2i index build`` at its defaults. Then it starts, as processes on loopback, ``i2i serve``
at its defaults (mode ``serve``), the same without its neighbour cache (mode ``nocache``: every
history note searched, the cost of notes never seen before) and the server of ``--baseline-ref``
(the code before the speed work, exported with ``git archive``) as the old benchmark ran it
(``--nprobe 8``, mode ``baseline``), and the same gRPC stack answering every call with one canned
response (``bench/grpc_floor_server.py``, mode ``floor``: what the recall work cannot go below), and drives each with closed-loop clients (grpc.aio, each on its
own connection, spread over a few processes) that send Recall(history of 50 notes, k=200) back to
back for a fixed time. Prints QPS, p50/p95/p99, errors, server CPU per request (every process of
the server) with its breakdown (lookup, neighbour cache, quantizer,
list scan, merge, response, and the rest: gRPC and protobuf), the share of history notes the
neighbour cache answered, recall@k of the merged list against an exact
search over all notes, the ratios between the modes, and how much of the server's CPU the floor is.

    python bench/recall_load.py [--data tight|loose] [--notes 1000000] [--dim 64] [--history 50] [--k 200]
                                [--concurrency 8] [--client-processes 2] [--duration 10] [--warmup 2]
                                [--modes floor,serve,nocache,baseline] [--baseline-ref REF] [--recall-histories 40]
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
TARGET_RECALL = 0.95
BASELINE_REF = "4c6ca8d"  # the recall server before the speed work (one flat-quantizer search, full merge)


@dataclass
class BenchConfig:
    notes: int = 1_000_000
    dim: int = 64
    data: str = "tight"  # tight: 2,000 clusters; loose: one cluster per 50 notes
    clusters: int = 0  # 0 = by --data
    nlist: int = 0  # 0 = the index builder's own choice (about 4 sqrt(notes): 4096 for 1M)
    nprobe: int = 8  # the baseline's (the old benchmark's) nprobe; `serve` uses the index's default
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
    modes: tuple[str, ...] = ("floor", "serve", "nocache", "baseline")
    baseline_ref: str = BASELINE_REF
    recall_histories: int = 40
    factory: str = ""  # "" = i2i index build's default
    build_args: str = ""  # extra `i2i index build` options (e.g. "--rerank on")
    serve_args: str = ""  # extra `i2i serve` options for mode serve (default: none, the defaults)

    def __post_init__(self) -> None:
        if self.data not in ("tight", "loose"):
            raise SystemExit(f"--data must be tight or loose, got {self.data!r}")
        if not self.clusters:
            self.clusters = 2000 if self.data == "tight" else max(1, self.notes // 50)


# --------------------------------------------------------------------------- data and index
def note_id(i: int) -> str:
    return f"note-{i:07d}"


def clustered_vectors(cfg: BenchConfig, start: int, stop: int, centers: np.ndarray) -> np.ndarray:
    """Rows start..stop of the corpus: a cluster centre plus noise, L2-normalised (deterministic per row block)."""
    rng = np.random.default_rng([cfg.seed, start])
    cluster = rng.integers(0, len(centers), size=stop - start)
    vectors = centers[cluster] + 0.35 * rng.standard_normal((stop - start, cfg.dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def corpus_vectors(cfg: BenchConfig) -> np.ndarray:
    """The whole corpus (deterministic: the same rows every call)."""
    centers = np.random.default_rng(cfg.seed).standard_normal((cfg.clusters, cfg.dim)).astype(np.float32)
    vectors = np.empty((cfg.notes, cfg.dim), dtype=np.float32)
    for start in range(0, cfg.notes, 250_000):
        stop = min(cfg.notes, start + 250_000)
        vectors[start:stop] = clustered_vectors(cfg, start, stop, centers)
    return vectors


def prepare(cfg: BenchConfig) -> tuple[Path, str]:
    """Returns (index_dir, table_url), building them under the cache directory on first use.

    The index is built by ``i2i index build`` with its defaults (plus ``--factory`` when given),
    exactly as a new user would build it.
    """
    from embedding.table import open_table

    factory = " ".join([cfg.factory or "default", *cfg.build_args.split()])
    work = cfg.cache_dir / (f"notes{cfg.notes}-dim{cfg.dim}-clusters{cfg.clusters}-seed{cfg.seed}-"
                            f"{re.sub(r'[^A-Za-z0-9]+', '_', factory)}-nlist{cfg.nlist}-cal2")
    index_dir, table_dir, ready = work / "index", work / "table", work / "READY"
    table_url = f"parquet:{table_dir}"
    if ready.exists():
        print(f"using cached table and index in {work}")
        return index_dir, table_url
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    ids = [note_id(i) for i in range(cfg.notes)]
    vectors = corpus_vectors(cfg)
    with open_table(table_url) as table:
        for start in range(0, cfg.notes, 250_000):
            stop = min(cfg.notes, start + 250_000)
            table.put_many(ids[start:stop], vectors[start:stop], MODEL_VERSION)
    print(f"table of {cfg.notes:,} embeddings written in {time.perf_counter() - started:.1f} s")
    command = [str(Path(sys.executable).parent / "i2i"), "index", "build", "--index-dir", str(index_dir),
               "--table", table_url]
    if cfg.factory:
        command += ["--factory", cfg.factory]
    if cfg.nlist:
        command += ["--nlist", str(cfg.nlist)]
    command += cfg.build_args.split()
    started = time.perf_counter()
    build = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if build.returncode != 0:
        raise SystemExit(f"i2i index build failed ({build.returncode}): {build.stderr.strip()[-2000:]}")
    print(f"i2i index build ({' '.join(command[3:])}) in {time.perf_counter() - started:.1f} s:")
    print("\n".join(f"  {line}" for line in build.stdout.strip().splitlines()))
    ready.write_text("ok\n")
    return index_dir, table_url


def sample_histories(cfg: BenchConfig) -> list[list[str]]:
    rng = np.random.default_rng(cfg.seed + 1)
    return [[note_id(int(i)) for i in rng.choice(cfg.notes, size=cfg.history, replace=False)]
            for _ in range(cfg.histories)]


# --------------------------------------------------------------------------- server
def baseline_tree(cfg: BenchConfig) -> Path:
    """The code of ``--baseline-ref``, exported once (``git archive``) under the cache directory."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{cfg.baseline_ref}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--baseline-ref {cfg.baseline_ref!r} is not a commit of this repository")
    tree = cfg.cache_dir / f"baseline-{commit.stdout.strip()[:12]}"
    if not (tree / "READY").exists():
        import shutil

        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", commit.stdout.strip()], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
        archive.wait()
        (tree / "READY").write_text("ok\n")
    return tree


def start_server(cfg: BenchConfig, index_dir: Path, table_url: str, mode: str
                 ) -> tuple[subprocess.Popen, str, int | None]:
    """(process, target, metrics port) of a server for ``mode``: ``serve`` (this tree, `i2i serve`
    defaults), ``baseline`` (the old code as the old benchmark ran it), ``per_note`` or ``floor``
    (the gRPC stack with a canned answer, as many processes and threads as `i2i serve`)."""
    common = ["--index-dir", str(index_dir), "--table", table_url, "--port", "0", "--wait-for-index", "300"]
    env = dict(os.environ)
    cwd = ROOT
    if mode == "serve":
        args = [*common, "--metrics-port", "0", *cfg.serve_args.split()]
    elif mode == "nocache":  # i2i serve defaults without the neighbour cache: every history note searched
        args = [*common, "--metrics-port", "0", "--neighbour-cache-mb", "0", *cfg.serve_args.split()]
    elif mode == "per_note":
        args = [*common, "--metrics-port", "0", "--search-mode", "per_note"]
    elif mode == "baseline":
        cwd = baseline_tree(cfg)
        env["PYTHONPATH"] = str(cwd)
        args = [*common, "--nprobe", str(cfg.nprobe), "--max-history", str(cfg.history),
                "--workers", str(max(8, cfg.concurrency)), "--table-timeout", "5"]
    elif mode != "floor":
        raise SystemExit(f"unknown mode {mode!r}: expected serve, nocache, baseline, per_note or floor")
    command = [sys.executable, "-m", "i2i.app.cli", "serve", *args] if mode != "floor" else \
        [sys.executable, str(ROOT / "bench" / "grpc_floor_server.py"), "--port", "0", "--k", str(cfg.k)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd,
                               env=env)
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+:\d+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"i2i serve ({mode}) did not start: {line!r}")
    metrics = re.search(r"metrics on :(\d+)", line)
    return process, match.group(1), int(metrics.group(1)) if metrics else None


def stage_cpu(metrics_port: int | None) -> dict[str, float]:
    """The server's i2i_recall_cpu_seconds_total by stage, and its neighbour cache hits and misses
    (under ``cache_hits`` and ``cache_misses``; empty for a server without them)."""
    if metrics_port is None:
        return {}
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {m.group(1): float(m.group(2))
              for m in re.finditer(r'^i2i_recall_cpu_seconds_total\{stage="(\w+)"\} (\S+)$', text, re.M)}
    for name in ("hits", "misses"):
        found = re.search(rf"^i2i_recall_neighbour_cache_{name}_total (\S+)$", text, re.M)
        if found:
            values[f"cache_{name}"] = float(found.group(1))
    return values


def measure_recall(cfg: BenchConfig, target: str, histories: list[list[str]], truth: list[list[int]]) -> float:
    """Mean recall@k of the server's merged list against the exact merged list."""
    import grpc

    from recall_server.stubs import recall_pb2, recall_pb2_grpc

    recalls = []
    with grpc.insecure_channel(target) as channel:
        stub = recall_pb2_grpc.RecallServiceStub(channel)
        for history, expected in zip(histories, truth):
            response = stub.Recall(recall_pb2.RecallRequest(history=history, k=cfg.k), timeout=30)
            got = {int(n.note_id.split("-")[1]) for n in response.notes}
            recalls.append(len(got & set(expected)) / len(expected))
    return float(np.mean(recalls))


def exact_merged(cfg: BenchConfig, histories: list[list[str]]) -> list[list[int]]:
    """The exact answer: top k notes by max inner product over the history, history excluded."""
    vectors = corpus_vectors(cfg)
    truth = []
    for history in histories:
        rows = [int(n.split("-")[1]) for n in history]
        best = np.full(cfg.notes, -np.inf, dtype=np.float32)
        for start in range(0, cfg.notes, 262144):
            block = vectors[start:start + 262144]
            best[start:start + len(block)] = (vectors[rows] @ block.T).max(axis=0)
        best[rows] = -np.inf
        truth.append(np.argpartition(-best, cfg.k)[:cfg.k].tolist())
    return truth


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


def wait_freshness_checked(metrics_port: int | None, timeout: float = 300.0) -> None:
    """Waits for the server's first freshness check after loading (it reads every id of the table,
    1.3 s of CPU for 1M notes, and is redone only when the table or the index changes), so the
    measurement sees the steady state rather than that one-off cost."""
    if metrics_port is None:
        return
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        found = re.search(r"^i2i_recall_freshness_checked_timestamp_seconds (\S+)$", text, re.M)
        if found is None or float(found.group(1)) > 0:
            return
        time.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (Linux /proc): ``i2i serve`` with several processes serves
    from its children, so the server is charged for the whole tree."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that just ended
            continue
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, its_parent in parents.items() if its_parent == parent]
        tree += children
        frontier += children
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its descendants, to charge the server per request."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def stop_server(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return out.strip().splitlines()[-1] if out.strip() else ""


# --------------------------------------------------------------------------- clients
def client_process(target: str, histories: list[list[str]], loops: int, k: int, warmup: float, duration: float,
                   offset: int, interval: float, results) -> None:
    """Runs ``loops`` callers, each on its own aio channel and connection (as independent callers
    would: the server spreads connections over its processes); sends (latencies, errors) back.

    ``interval`` 0: closed loop. Otherwise each caller has a send schedule every ``interval``
    seconds and latency counts from the scheduled time, so a server that falls behind is charged
    for the queueing it causes.
    """
    import grpc

    from recall_server.stubs import recall_pb2, recall_pb2_grpc

    sent = [0]  # calls answered over the whole run, warm-up included: the client CPU is per call

    async def main():
        latencies: list[float] = []
        errors: dict[str, int] = {}
        begin = time.perf_counter()
        measure_from, end = begin + warmup, begin + warmup + duration

        async def loop(slot: int):
            async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = recall_pb2_grpc.RecallServiceStub(channel)
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
                    sent[0] += 1
                    if started >= measure_from and finished <= end:
                        latencies.append(finished - started)
                        if code is not None:
                            errors[code] = errors.get(code, 0) + 1

        await asyncio.gather(*(loop(slot) for slot in range(loops)))
        return latencies, errors

    cpu_before = time.process_time()
    latencies, errors = asyncio.run(main())
    results.put((latencies, errors, time.process_time() - cpu_before, sent[0]))


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
    client_cpu, calls = 0.0, 0
    for _ in processes:
        got_latencies, got_errors, got_cpu, got_calls = results.get(timeout=cfg.warmup + cfg.duration + 120)
        latencies += got_latencies
        client_cpu, calls = client_cpu + got_cpu, calls + got_calls
        for code, count in got_errors.items():
            errors[code] = errors.get(code, 0) + count
    for process in processes:
        process.join(timeout=30)
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "qps": len(ms) / cfg.duration, "errors": sum(errors.values()), "by_code": errors,
            "client_cpu_ms": 1000 * client_cpu / max(calls, 1),
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan")}


# --------------------------------------------------------------------------- main
def parse(argv: list[str]) -> BenchConfig:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("notes", "dim", "clusters", "nlist", "nprobe", "history", "k", "concurrency", "client_processes",
                 "histories", "seed", "recall_histories"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       default=0 if name == "clusters" else getattr(d, name))
    p.add_argument("--data", choices=["tight", "loose"], default=d.data,
                   help="tight: 2,000 clusters; loose: one cluster per 50 notes (default: %(default)s)")
    p.add_argument("--baseline-ref", default=d.baseline_ref, help="commit whose server is the baseline")
    p.add_argument("--factory", default=d.factory, help="i2i index build --factory (default: its default)")
    p.add_argument("--serve-args", default=d.serve_args, help="extra i2i serve options for mode serve")
    p.add_argument("--rate", type=float, default=d.rate,
                   help="offered load in requests/s over all clients (open loop); 0 = closed loop")
    p.add_argument("--duration", type=float, default=d.duration, help="measured seconds per mode")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds before each measurement")
    p.add_argument("--cache-dir", type=Path, default=d.cache_dir, help="where the table and index are kept")
    p.add_argument("--modes", default=",".join(d.modes),
                   help="servers to run: floor (the gRPC stack with a canned answer), serve, nocache (serve "
                        "without the neighbour cache), baseline, per_note")
    args = p.parse_args(argv)
    values = {name: getattr(args, name) for name in vars(args)}
    values["modes"] = tuple(mode for mode in args.modes.split(",") if mode)
    return BenchConfig(**values)


STAGES = ("lookup", "cache", "quantizer", "scan", "rerank", "merge", "response")


def run_mode(cfg: BenchConfig, mode: str, index_dir: Path, table_url: str, histories: list[list[str]],
             recall_histories: list[list[str]], truth: list[list[int]]) -> dict:
    started = time.perf_counter()
    process, target, metrics_port = start_server(cfg, index_dir, table_url, mode)
    try:
        wait_serving(target)
        wait_freshness_checked(metrics_port)
        print(f"[{mode}] server {target} ready in {time.perf_counter() - started:.1f} s; measuring recall, "
              "then driving load", flush=True)
        recall = measure_recall(cfg, target, recall_histories, truth) if truth and mode != "floor" else float("nan")
        stages_before, cpu_before = stage_cpu(metrics_port), cpu_seconds(process.pid)
        figures = drive(cfg, target, histories)
        server_cpu = cpu_seconds(process.pid) - cpu_before
        stages_after = stage_cpu(metrics_port)
    finally:
        closing = stop_server(process)
    # The window covers warm-up too, so charge every request the server answered in it.
    answered = max(figures["requests"] * (cfg.warmup + cfg.duration) / cfg.duration, 1)
    figures["server_cpu_ms"] = 1000 * server_cpu / answered
    figures["recall"] = recall
    breakdown = {stage: 1000 * (stages_after.get(stage, 0.0) - stages_before.get(stage, 0.0)) / answered
                 for stage in STAGES if stage in stages_after}
    if breakdown:
        breakdown["grpc+other"] = figures["server_cpu_ms"] - sum(breakdown.values())
    figures["breakdown"] = breakdown
    hits, misses = (stages_after.get(f"cache_{name}", 0.0) - stages_before.get(f"cache_{name}", 0.0)
                    for name in ("hits", "misses"))
    figures["cache_hit_rate"] = hits / (hits + misses) if hits + misses else float("nan")
    f = figures
    print(f"[{mode}] {f['requests']} requests, {f['qps']:.1f} QPS, p50 {f['p50']:.2f} ms, p95 {f['p95']:.2f} ms, "
          f"p99 {f['p99']:.2f} ms, errors {f['errors']} {f['by_code'] or ''}, server CPU {f['server_cpu_ms']:.2f} "
          f"ms/request, client CPU {f['client_cpu_ms']:.2f} ms/request, recall@{cfg.k} {recall:.4f}")
    if breakdown:
        print(f"[{mode}] server CPU per request (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in breakdown.items()))
    if f["cache_hit_rate"] == f["cache_hit_rate"]:
        print(f"[{mode}] neighbour cache: {100 * f['cache_hit_rate']:.1f}% of history notes answered from it "
              "(measured window and warm-up)")
    print(f"[{mode}] {closing}")
    return figures


def main(argv: list[str] | None = None) -> int:
    cfg = parse(sys.argv[1:] if argv is None else argv)
    loop = f"open loop at {cfg.rate:.0f} requests/s" if cfg.rate > 0 else "closed loop"
    print(f"recall load: {cfg.notes:,} notes x {cfg.dim}-d, {cfg.data} data ({cfg.clusters:,} clusters), history "
          f"{cfg.history}, k {cfg.k}, {cfg.concurrency} concurrent clients in {cfg.client_processes} processes "
          f"({loop}), {cfg.duration:.0f} s measured after {cfg.warmup:.0f} s warm-up, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    index_dir, table_url = prepare(cfg)
    histories = sample_histories(cfg)
    recall_histories = histories[:cfg.recall_histories]
    started = time.perf_counter()
    truth = exact_merged(cfg, recall_histories) if recall_histories else []
    print(f"exact merged top {cfg.k} of {len(truth)} histories in {time.perf_counter() - started:.1f} s")
    figures = {mode: run_mode(cfg, mode, index_dir, table_url, histories, recall_histories, truth)
               for mode in cfg.modes}
    print()
    print(f"{'mode':<10} {'requests':>9} {'QPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'srv CPU ms/req':>15} {'clt CPU ms/req':>15} {'recall@' + str(cfg.k):>11}")
    for mode, f in figures.items():
        print(f"{mode:<10} {f['requests']:>9} {f['qps']:>8.1f} {f['p50']:>8.2f} {f['p95']:>8.2f} {f['p99']:>8.2f} "
              f"{f['errors']:>7} {f['server_cpu_ms']:>15.2f} {f['client_cpu_ms']:>15.2f} {f['recall']:>11.4f}")
    if cfg.rate <= 0:  # closed loop on shared CPUs: server and clients together bound the QPS
        for mode, f in figures.items():
            ceiling = (os.cpu_count() or 1) * 1000 / (f["server_cpu_ms"] + f["client_cpu_ms"])
            print(f"[{mode}] CPU ceiling, about: {os.cpu_count()} CPUs / (server {f['server_cpu_ms']:.2f} + clients "
                  f"{f['client_cpu_ms']:.2f} ms a request) = {ceiling:.0f} QPS, where {cfg.concurrency} closed-loop "
                  f"clients would wait {1000 * cfg.concurrency / ceiling:.1f} ms on average; measured {f['qps']:.0f} QPS")
    for mode in ("serve", "nocache"):
        if mode in figures and "baseline" in figures:
            b, n = figures[mode], figures["baseline"]
            print(f"{mode} against baseline ({cfg.baseline_ref}): QPS {b['qps'] / n['qps']:.2f}x, p99 "
                  f"{n['p99'] / b['p99']:.2f}x lower, server CPU {n['server_cpu_ms'] / b['server_cpu_ms']:.2f}x lower")
    for mode in ("serve", "nocache"):
        if mode in figures and "floor" in figures:
            b, f = figures[mode], figures["floor"]
            print(f"[{mode}] the gRPC floor (a canned answer, same clients and processes) is {f['server_cpu_ms']:.2f} "
                  f"of its {b['server_cpu_ms']:.2f} ms server CPU a request ({100 * f['server_cpu_ms'] / b['server_cpu_ms']:.0f}%); "
                  f"the recall work adds {b['server_cpu_ms'] - f['server_cpu_ms']:.2f} ms; the floor alone: "
                  f"{f['qps']:.0f} QPS, p99 {f['p99']:.2f} ms")
    for mode in ("serve", "nocache"):
        if mode in figures:
            b = figures[mode]
            met = b["p99"] <= TARGET_P99_MS and b["errors"] == 0 and b["recall"] >= TARGET_RECALL
            print(f"[{mode}] target p99 <= {TARGET_P99_MS:.0f} ms, zero errors, recall@{cfg.k} >= {TARGET_RECALL} "
                  f"at {cfg.concurrency} clients: {'met' if met else 'NOT met'} (p99 {b['p99']:.2f} ms, "
                  f"{b['errors']} errors, recall {b['recall']:.4f})")
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(latency figures include any other work sharing the CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
