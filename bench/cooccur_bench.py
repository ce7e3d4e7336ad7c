"""Benchmark: the Beam co-occurrence job against a DuckDB SQL computation of the same scores.

At each size it generates events (5k users and 50k notes per million events, 30 days,
hive-partitioned by day), runs a DuckDB query of paper eq. 2 (same window, cap and N_u rules)
and ``i2i cooccur`` on each runner, each in its own process so wall time and peak memory (RSS of
the process tree, sampled) are measured per job, checks that every run gives DuckDB's pairs,
user counts and scores, and prints wall times, ratios to DuckDB and peak memory. Runs hold
/tmp/i2i-bench.lock and print the load average.

    python bench/cooccur_bench.py [--events 1M,4M,16M] [--runner local,dask] [--plot docs/cooccur_cost.png]
                                  [--work DIR] [--json FILE] [-- extra Beam options]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
LOCK = "/tmp/i2i-bench.lock"
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)



def generate(out: Path, events: int, users: int, notes: int, days: int, seed: int = 7) -> int:
    """Sessions of Zipf-popular notes: each user browses in bursts, clicking about a third of what it sees."""
    rng = np.random.default_rng(seed)
    per_user = rng.poisson(events / users, users).clip(1)
    total = int(per_user.sum())
    user = np.repeat(np.arange(users), per_user)
    session_len = 8
    session_of = np.arange(total) // session_len
    session_start = rng.integers(0, days * DAY_MS, session_of.max() + 1)
    ts = session_start[session_of] + (np.arange(total) % session_len) * rng.integers(5_000, 120_000, total)
    ts = np.minimum(ts, days * DAY_MS - 1) + int(START.timestamp() * 1000)
    popularity = 1.0 / np.arange(1, notes + 1) ** 0.8
    note = rng.choice(notes, total, p=popularity / popularity.sum())
    click = rng.random(total) < 0.35
    table = pa.table({
        "user_id": pa.array([f"u{u:06d}" for u in user]),
        "note_id": pa.array([f"n{n:07d}" for n in note]),
        "action": pa.array(np.where(click, "click", "view")),
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    })
    day = (ts - int(START.timestamp() * 1000)) // DAY_MS
    for d in range(days):
        part = table.filter(pa.array(day == d))
        directory = out / f"dt={(START + dt.timedelta(days=d)).date().isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, directory / "part-00000.parquet")
    return total


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def timed_child(command: list[str]) -> tuple[float, float, str]:
    """Runs a command; returns (wall seconds, peak RSS in MiB of its process tree, stdout).

    The tree's RSS is sampled every 50 ms (a job on Dask runs its workers as child processes).
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, _tree_rss(watched))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    reader.join()
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{''.join(output)}")
    return wall, peak / 2**20, "".join(output)


def duckdb_scores(events: str, out: str, window_ms: int, cap: int) -> None:
    import duckdb

    con = duckdb.connect()
    from i2i.app.data.calibration import COOCCUR_SQL

    sql = COOCCUR_SQL.format(events=f"read_parquet('{events}/**/*.parquet')", cap=cap, window_ms=window_ms)
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")


def compare(beam_dir: Path, duck_file: Path) -> str:
    from i2i.core.io import read_table

    beam = read_table(beam_dir / "scores").sort_by([("src_note_id", "ascending"), ("dst_note_id", "ascending")])
    duck = pq.read_table(duck_file).sort_by([("src_note_id", "ascending"), ("dst_note_id", "ascending")])
    if beam.num_rows != duck.num_rows:
        raise SystemExit(f"MISMATCH: beam has {beam.num_rows} pairs, duckdb {duck.num_rows}")
    for column in ("src_note_id", "dst_note_id", "users"):
        if not beam.column(column).equals(duck.column(column).cast(beam.schema.field(column).type)):
            raise SystemExit(f"MISMATCH in column {column}")
    a = beam.column("score").to_numpy()
    b = duck.column("score").cast(pa.float64()).to_numpy()
    worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if len(a) else 0.0
    if worst > 1e-12:
        raise SystemExit(f"MISMATCH: largest relative score difference {worst:.3g}")
    exact = int(np.count_nonzero(a == b))
    return f"{beam.num_rows} pairs agree (users exact; scores: {exact} bit-identical, max rel diff {worst:.2g})"


RUNNERS = {"local": ["--runner=DirectRunner"], "dask": ["--runner=dask", "--dask-workers", "2"]}


def parse_sizes(text: str) -> list[int]:
    """'1M,4M,16M' or '250k,1000000' -> event counts."""
    scale = {"k": 1_000, "m": 1_000_000}
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        sizes.append(int(float(item[:-1]) * scale[item[-1]]) if item[-1] in scale else int(item))
    return sizes


@contextlib.contextmanager
def bench_lock(path: str = LOCK):
    """One benchmark at a time on a shared machine."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(size: int, args, beam_args: list[str], work: Path) -> list[dict]:
    """DuckDB and each runner on the same generated events; each result checked against DuckDB."""
    users = max(1, round(size * args.users_per_million / 1e6))
    notes = max(1, round(size * args.notes_per_million / 1e6))
    events_dir = work / f"events-{size}"
    if not events_dir.exists():
        started = time.perf_counter()
        total = generate(events_dir, size, users, notes, args.days)
        print(f"generated {total} events ({users} users, {notes} notes, {args.days} days) "
              f"in {time.perf_counter() - started:.1f}s -> {events_dir}", flush=True)
    duck_file = work / f"duckdb-{size}.parquet"
    duck_cmd = [sys.executable, __file__, "--duckdb-only", str(events_dir), str(duck_file)]
    print(f"[{size} events] {load()}", flush=True)
    duck_wall, duck_mem, _ = timed_child(duck_cmd)
    results = [{"events": size, "job": "duckdb", "wall_s": duck_wall, "peak_mib": duck_mem, "ratio": 1.0}]
    print(f"  duckdb   {duck_wall:8.2f} s {duck_mem:8.0f} MiB", flush=True)
    for runner in args.runner:
        out = work / f"beam-{runner}-{size}"
        beam_cmd = [sys.executable, "-c", "import sys; from pipelines.cooccur import main; sys.exit(main(sys.argv[1:]))",
                    "--events", str(events_dir), "--out", str(out), *RUNNERS[runner], *beam_args]
        wall, mem, _ = timed_child(beam_cmd)
        summary = json.loads((out / "_SUMMARY.json").read_text())
        check = compare(out, duck_file)
        results.append({"events": size, "job": runner, "wall_s": wall, "peak_mib": mem, "ratio": wall / duck_wall,
                        "pipeline_s": summary["timings_s"]["pipeline"], "pairs": summary["counts"]["pairs"],
                        "user_pairs": summary["counts"]["user_pairs"]})
        print(f"  {runner:<8} {wall:8.2f} s {mem:8.0f} MiB  ratio {wall / duck_wall:.2f}x  "
              f"(pipeline {summary['timings_s']['pipeline']:.2f}s; {check})", flush=True)
    print(f"  after: {load()}", flush=True)
    return results


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (wall_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for job in dict.fromkeys(r["job"] for r in results):
        rows = [r for r in results if r["job"] == job]
        x = [r["events"] / 1e6 for r in rows]
        label = {"duckdb": "DuckDB", "local": "Beam, local runner", "dask": "Beam, Dask (2 workers)"}.get(job, job)
        wall_ax.plot(x, [r["wall_s"] for r in rows], marker="o", label=label)
        mem_ax.plot(x, [r["peak_mib"] for r in rows], marker="o", label=label)
    for ax, ylabel in ((wall_ax, "wall time, s"), (mem_ax, "peak RSS of the process tree, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events, millions")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    wall_ax.legend()
    fig.suptitle("i2i cooccur cost against events (paper eq. 2; same data, same run)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot -> {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=parse_sizes, default=[1_000_000], help="sizes, e.g. 1M,4M,16M")
    p.add_argument("--runner", type=lambda text: [r.strip() for r in text.split(",")], default=["local"],
                   help="comma-separated: local, dask (a 2-worker LocalCluster started by the job)")
    p.add_argument("--users-per-million", type=int, default=5_000)
    p.add_argument("--notes-per-million", type=int, default=50_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--work", help="working directory (default: a temporary one); generated events are reused")
    p.add_argument("--plot", help="write the cost curves as a PNG here")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--merge", action="append", default=[],
                   help="figures (--json) of an earlier run to put in the table and plot too, e.g. a larger "
                        "size measured on fewer runners")
    p.add_argument("--duckdb-only", nargs=2, metavar=("EVENTS", "OUT"), help=argparse.SUPPRESS)
    args, beam_args = p.parse_known_args()
    beam_args = [a for a in beam_args if a != "--"]
    window_ms, cap = 86_400_000, 1000
    if args.duckdb_only:
        duckdb_scores(args.duckdb_only[0], args.duckdb_only[1], window_ms, cap)
        return
    unknown = [r for r in args.runner if r not in RUNNERS]
    if unknown:
        p.error(f"unknown runner {unknown[0]!r} (expected {', '.join(RUNNERS)})")
    work = Path(args.work or tempfile.mkdtemp(prefix="cooccur-bench-"))
    results: list[dict] = []
    with bench_lock():
        print(f"bench lock {LOCK} held; {load()}; {os.cpu_count()} CPUs", flush=True)
        for size in args.events:
            results += measure(size, args, beam_args, work)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    for path in args.merge:
        results += json.loads(Path(path).read_text())
    results.sort(key=lambda r: (r["events"], list(RUNNERS).index(r["job"]) + 1 if r["job"] in RUNNERS else 0))
    print(f"\n{'events':>10} {'job':<8} {'wall s':>8} {'peak MiB':>9} {'x DuckDB':>9}")
    for r in results:
        print(f"{r['events']:>10} {r['job']:<8} {r['wall_s']:>8.2f} {r['peak_mib']:>9.0f} {r['ratio']:>8.2f}x")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
