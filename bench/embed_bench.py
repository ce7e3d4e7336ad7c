"""Benchmark of the embedding job and the embedding tables.

Prints, measured in the same run on the same notes:
  * notes/s of the bare model loop (``NoteEncoder.encode``: length-sorted batches, forward only)
    and of the embedding job (reading the notes table, skipping present ids, writing Parquet
    chunks), and their ratio (target: job time within 1.15x of the bare loop);
  * Redis write and read throughput (vectors/s) and the latency of a 50-id lookup, against a
    redis-server started on a free loopback port (or ``--redis-url``);
  * with ``--parquet``, only the Parquet table's read path on a table of ``--parquet-notes``: CPU
    per 50-id ``get_many`` on a warm reader against the bare in-memory lookup (dict + take), and
    the seconds of a fresh reader's first lookup and of ``has_ids`` with the longest a probe thread
    waited for the GIL meanwhile; with ``--reference-rev REV`` the table code of that git revision
    is measured in the same run on the same table.

    python bench/embed_bench.py [--notes 512] [--checkpoint DIR] [--device cpu|cuda] [--batch-size N]
    python bench/embed_bench.py --batch-sizes 1,4,16,64 [--plot docs/embed_batch.png] --skip-redis
    python bench/embed_bench.py --parquet [--parquet-notes 1000000] [--dim 64] [--reference-rev REV]

With ``--batch-sizes`` it sweeps the batch size instead: notes/s of the bare loop and of the job
at each size, on the same notes and model, best of ``--rounds`` interleaved rounds.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    from i2i.testing.serving import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed; pass --redis-url")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.terminate()
    sys.exit("redis-server did not start")


def _setup(args, workdir: Path):
    """The encoder, the notes (also written as a notes table) and the checkpoint directory."""
    from embedding.checkpoint import load_encoder
    from embedding.testing import make_notes, make_tiny_checkpoint, notes_table
    from i2i.core.io import write_table

    checkpoint = args.checkpoint or make_tiny_checkpoint(str(workdir / "checkpoint"))
    encoder = load_encoder(checkpoint, device=args.device)
    notes = make_notes(args.notes, groups=16)
    for i, note in enumerate(notes):  # lengths vary as in real notes, so sorting by length matters
        note["content"] = " ".join([note["content"]] * (1 + i % 7))
    write_table(notes_table(notes), workdir / "notes")
    return encoder, notes, checkpoint


def _timed_rounds(encoder, notes, checkpoint: str, workdir: Path, batch_size: int, rounds: int,
                  chunk_size: int, tag: str) -> tuple[float, float]:
    """Best bare-loop and best job seconds over interleaved rounds (fair on a busy machine)."""
    from embedding.embed_job import EmbedJobConfig, run_embed_job

    bare_times, job_times = [], []
    for round_ in range(rounds):
        started = time.perf_counter()
        encoder.encode(notes, batch_size=batch_size)
        if encoder.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        bare_times.append(time.perf_counter() - started)
        config = EmbedJobConfig(notes=str(workdir / "notes"), checkpoint=checkpoint,
                                table=f"parquet:{workdir}/emb-{tag}-{round_}", batch_size=batch_size,
                                chunk_size=chunk_size, progress=False, compact=False)
        summary = run_embed_job(config, encoder=encoder)
        assert summary.embedded == len(notes)
        job_times.append(summary.seconds)
    return min(bare_times), min(job_times)


def bench_batch_sizes(args, workdir: Path) -> None:
    encoder, notes, checkpoint = _setup(args, workdir)
    encoder.encode(notes[: max(args.batch_sizes)], batch_size=max(args.batch_sizes))  # warm-up
    print(f"model {encoder.model_version} dim={encoder.dim} device={encoder.device} notes={len(notes)} "
          f"threads={__import__('torch').get_num_threads()} {_load()}")
    print(f"{'batch':>6} {'bare notes/s':>13} {'job notes/s':>12} {'job/bare':>9}")
    rows = []
    for batch_size in args.batch_sizes:
        bare, job = _timed_rounds(encoder, notes, checkpoint, workdir, batch_size, args.rounds, args.chunk_size,
                                  f"b{batch_size}")
        rows.append((batch_size, len(notes) / bare, len(notes) / job))
        print(f"{batch_size:>6} {len(notes) / bare:>13.1f} {len(notes) / job:>12.1f} {job / bare:>8.3f}x", flush=True)
    print(f"after: {_load()}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label="bare model loop")
        ax.plot([r[0] for r in rows], [r[2] for r in rows], marker="o", label="i2i embed job")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("notes/s")
        ax.set_title(f"embedding throughput, {encoder.device} ({Path(checkpoint).name}, {len(notes)} notes)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot -> {args.plot}")


def _load() -> str:
    import os

    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_job(args, workdir: Path) -> None:
    encoder, notes, checkpoint = _setup(args, workdir)
    args.batch_size = args.batch_size or encoder.default_batch_size
    encoder.encode(notes[: args.batch_size], batch_size=args.batch_size)  # warm-up
    print(f"model {encoder.model_version} dim={encoder.dim} device={encoder.device} "
          f"notes={len(notes)} batch={args.batch_size}")
    bare, job = _timed_rounds(encoder, notes, checkpoint, workdir, args.batch_size, args.rounds, args.chunk_size, "job")
    print(f"bare model loop   {len(notes) / bare:9.1f} notes/s  ({bare:.2f} s)")
    print(f"embedding job     {len(notes) / job:9.1f} notes/s  ({job:.2f} s, Parquet chunks of {args.chunk_size})")
    print(f"job / bare time   {job / bare:9.3f}x  (target <= 1.15x)")


def bench_redis(args, workdir: Path) -> None:
    from embedding.table import open_table

    process = None
    url = args.redis_url
    if url is None:
        process, url = start_redis(workdir)
    try:
        with open_table(url + ("&" if "?" in url else "?") + "prefix=bench") as table:
            rng = np.random.default_rng(0)
            ids = [f"note-{i:08d}" for i in range(args.vectors)]
            vectors = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
            started = time.perf_counter()
            for start in range(0, len(ids), 10_000):
                table.put_many(ids[start:start + 10_000], vectors[start:start + 10_000], "bench")
            write = time.perf_counter() - started
            started = time.perf_counter()
            scanned = sum(len(batch) for batch, _ in table.scan("bench", batch_size=10_000))
            scan = time.perf_counter() - started
            assert scanned == len(ids)
            order = rng.permutation(len(ids))
            latencies = []
            for start in range(0, min(len(ids), args.lookups * 50), 50):
                wanted = [ids[i] for i in order[start:start + 50]]
                began = time.perf_counter()
                lookup = table.get_many(wanted, "bench")
                latencies.append(time.perf_counter() - began)
                assert len(lookup.found_ids) == 50
            latencies_ms = np.array(latencies) * 1e3
            looked_up = 50 * len(latencies)
            print(f"redis {url.split('@')[-1]}  {args.vectors} vectors of dim {args.dim}")
            print(f"redis write       {args.vectors / write:9.0f} vectors/s (pipelined put_many)")
            print(f"redis read scan   {scanned / scan:9.0f} vectors/s")
            print(f"redis read 50-id  {looked_up / latencies_ms.sum() * 1e3:9.0f} vectors/s (get_many of 50)")
            print(f"50-id lookup      p50 {np.percentile(latencies_ms, 50):.3f} ms  "
                  f"p99 {np.percentile(latencies_ms, 99):.3f} ms  ({len(latencies)} lookups, one round trip each)")
            table.flush_version("bench")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


def _reference_table_class(rev: str):
    """``ParquetEmbeddingTable`` as it was at git revision ``rev``, loaded beside the current one."""
    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:embedding/table/parquet.py"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout
    name = f"parquet_at_{rev.replace('~', '_').replace('^', '_').replace('/', '_')}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:embedding/table/parquet.py", "exec"), module.__dict__)
    return module.ParquetEmbeddingTable


class GilProbe:
    """A thread that sleeps 1 ms at a time and records how much later it gets to run again: the time
    it waited for the GIL (as a request thread waits while another thread holds it) and, on a busy
    machine, for a core."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            time.sleep(0.001)
            self.waits.append(time.perf_counter() - began - 0.001)

    def __enter__(self) -> "GilProbe":
        self._thread.start()
        time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def longest_ms(self) -> float:
        return max(self.waits, default=0.0) * 1e3


def _timed(call) -> tuple[float, float, float]:
    """Wall seconds, thread CPU seconds and the longest GIL wait of a probe thread (ms) of one call."""
    with GilProbe() as probe:
        wall, cpu = time.perf_counter(), time.thread_time()
        call()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return wall, cpu, probe.longest_ms()


def _print_medians(label: str, runs: list[tuple[float, float, float]]) -> None:
    wall, cpu, wait = (float(np.median([run[i] for run in runs])) for i in range(3))
    print(f"{label:<34} {wall:6.3f} s, {cpu:6.3f} s CPU, longest wait of a probe thread {wait:6.1f} ms")


def _in_turn(items: dict, round_: int) -> list:
    """The items in turn, reversed every other round: none always runs first on a warming machine."""
    pairs = list(items.items())
    return pairs[::-1] if round_ % 2 else pairs


def _write_bench_table(args, directory: Path) -> list[str]:
    from embedding.table.parquet import ParquetEmbeddingTable

    rng = np.random.default_rng(0)
    ids = [f"note-{i:08d}" for i in range(args.parquet_notes)]
    writer = ParquetEmbeddingTable(directory)
    per_part = -(-len(ids) // args.parquet_parts)
    for start in range(0, len(ids), per_part):
        part = ids[start:start + per_part]
        writer.put_many(part, rng.standard_normal((len(part), args.dim)).astype(np.float32), "bench")
    return ids


def bench_parquet(args, workdir: Path) -> None:
    """CPU per 50-id lookup, a fresh reader's first lookup and has_ids, for the current table code and
    (``--reference-rev``) that of another revision, in the same run on the same table."""
    from embedding.table.parquet import SETTLE_SECONDS, ParquetEmbeddingTable

    directory = workdir / "parquet-table"
    ids = _write_bench_table(args, directory)
    classes = {"now": ParquetEmbeddingTable}
    if args.reference_rev:
        classes[f"at {args.reference_rev}"] = _reference_table_class(args.reference_rev)
    print(f"parquet table: {len(ids)} notes of dim {args.dim} in {args.parquet_parts} parts; {args.rounds} "
          f"interleaved rounds (lookups: best round, others: median); {_load()}")

    readers, first = {}, {name: [] for name in classes}
    for round_ in range(args.rounds):  # a fresh reader's first lookup reads the table
        for name, cls in _in_turn(classes, round_):
            readers[name] = None  # the last round's rows go first
            readers[name] = cls(directory)
            first[name].append(_timed(lambda: readers[name].get_many(ids[:1], "bench")))
    for name, runs in first.items():
        _print_medians(f"first lookup ({name}):", runs)

    rng = np.random.default_rng(1)
    requests = [[ids[i] for i in rng.choice(len(ids), 50, replace=False)] for _ in range(args.lookups)]
    view_ids, view_matrix = next(readers["now"].scan("bench", batch_size=len(ids)))
    row_of = {note_id: i for i, note_id in enumerate(view_ids)}
    lookups = {"bare in-memory lookup": lambda request: view_matrix[[row_of[i] for i in request if i in row_of]]}
    for name, reader in readers.items():
        lookups[f"get_many ({name})"] = lambda request, reader=reader: reader.get_many(request, "bench")
        lookup = reader.get_many(requests[0] + ["absent"], "bench")  # the same answer as the bare lookup
        assert lookup.found_ids == requests[0] and lookup.missing_ids == ["absent"], name
        np.testing.assert_array_equal(lookup.vectors, lookups["bare in-memory lookup"](requests[0]))
    time.sleep(SETTLE_SECONDS + 0.1)  # until a reader trusts the directory's stamp
    cpu = {name: [] for name in lookups}
    for round_ in range(args.rounds):
        for name, lookup in _in_turn(lookups, round_):
            began = time.thread_time()
            for request in requests:
                lookup(request)
            cpu[name].append((time.thread_time() - began) / len(requests))
    best = {name: min(times) for name, times in cpu.items()}
    for name, seconds in best.items():
        print(f"{name:<34} {seconds * 1e6:6.1f} us CPU per 50-id lookup ({len(requests)} a round), "
              f"{seconds / best['bare in-memory lookup']:5.2f}x the bare lookup")
    if args.reference_rev:
        print(f"get_many now / at {args.reference_rev}: "
              f"{best['get_many (now)'] / best[f'get_many (at {args.reference_rev})']:.2f}x")

    expected = set(ids)
    for kind in ("warm", "fresh"):
        runs = {name: [] for name in classes}
        for round_ in range(args.rounds):
            for name, cls in _in_turn(classes, round_):
                reader = readers[name] if kind == "warm" else cls(directory)
                present = []
                runs[name].append(_timed(lambda: present.append(reader.has_ids("bench"))))
                assert present[0] == expected, name
        for name, times in runs.items():
            _print_medians(f"has_ids ({name}, {kind} reader):", times)
    print(f"after: {_load()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=512)
    parser.add_argument("--checkpoint", default=None, help="default: a tiny random checkpoint")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on a GPU, 32 on a CPU")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=None, help="default: 2 (3 with --parquet)")
    parser.add_argument("--vectors", type=int, default=50_000, help="vectors written to Redis")
    parser.add_argument("--dim", type=int, default=None, help="vector width (default: 128 for Redis, 64 with --parquet)")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--batch-sizes", type=lambda text: [int(x) for x in text.split(",")],
                        help="sweep: notes/s of the bare loop and the job at each batch size (e.g. 1,4,16,64)")
    parser.add_argument("--parquet", action="store_true", help="only the Parquet table's lookups and has_ids")
    parser.add_argument("--parquet-notes", type=int, default=1_000_000)
    parser.add_argument("--parquet-parts", type=int, default=8)
    parser.add_argument("--reference-rev", default=None,
                        help="with --parquet: also measure embedding/table/parquet.py of this git revision")
    parser.add_argument("--plot", help="with --batch-sizes: write notes/s against batch size as a PNG here")
    args = parser.parse_args(argv)
    args.dim = args.dim or (64 if args.parquet else 128)
    args.rounds = args.rounds or (3 if args.parquet else 2)
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        if args.parquet:
            bench_parquet(args, Path(tmp))
            return 0
        if args.batch_sizes:
            bench_batch_sizes(args, Path(tmp))
        elif not args.skip_job:
            bench_job(args, Path(tmp))
        if not args.skip_redis:
            bench_redis(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
