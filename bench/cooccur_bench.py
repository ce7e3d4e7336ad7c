"""Benchmark: the Beam co-occurrence job against a DuckDB SQL computation of the same scores.

Generates about 1M events (5k users, 50k notes, 30 days, hive-partitioned by day), runs
``i2i cooccur`` and a DuckDB query of paper eq. 2 (same window, cap and N_u rules), each in its
own process so wall time and peak memory are measured per job, checks that both give the same
pairs, user counts and scores, and prints both wall times, their ratio and peak memory.

    python bench/cooccur_bench.py [--events 1000000] [--users 5000] [--notes 50000] [--days 30]
                                  [--work DIR] [-- extra Beam options]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

DUCKDB_SQL = """
WITH ranked AS (
  SELECT user_id, note_id, action, epoch_ms(ts) AS t,
         row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, note_id DESC, action DESC) AS rn
  FROM read_parquet('{events}/**/*.parquet')
), kept AS (SELECT user_id, note_id, action, t FROM ranked WHERE rn <= {cap}),
clicks AS (SELECT user_id, note_id, t FROM kept WHERE action = 'click'),
n_u AS (SELECT user_id, count(DISTINCT note_id) AS n FROM clicks GROUP BY user_id),
members AS (
  SELECT DISTINCT a.user_id, a.note_id AS src_note_id, c.note_id AS dst_note_id
  FROM kept a JOIN clicks c
    ON a.user_id = c.user_id AND c.t > a.t AND c.t <= a.t + {window_ms}
  WHERE a.note_id <> c.note_id
)
SELECT src_note_id, dst_note_id, sum(1.0 / n) AS score, count(*) AS users
FROM members JOIN n_u USING (user_id)
GROUP BY src_note_id, dst_note_id
"""


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


def timed_child(command: list[str]) -> tuple[float, float, str]:
    """Runs a command; returns (wall seconds, peak RSS in MiB of that process, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{stdout}")
    return wall, usage.ru_maxrss / 1024, stdout


def duckdb_scores(events: str, out: str, window_ms: int, cap: int) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"COPY ({DUCKDB_SQL.format(events=events, cap=cap, window_ms=window_ms)}) TO '{out}' (FORMAT parquet)")


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--notes", type=int, default=50_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--work", help="working directory (default: a temporary one)")
    p.add_argument("--duckdb-only", nargs=2, metavar=("EVENTS", "OUT"), help=argparse.SUPPRESS)
    args, beam_args = p.parse_known_args()
    window_ms, cap = 86_400_000, 1000
    if args.duckdb_only:
        duckdb_scores(args.duckdb_only[0], args.duckdb_only[1], window_ms, cap)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="cooccur-bench-"))
    events_dir = work / "events"
    if not events_dir.exists():
        started = time.perf_counter()
        total = generate(events_dir, args.events, args.users, args.notes, args.days)
        print(f"generated {total} events ({args.users} users, {args.notes} notes, {args.days} days) "
              f"in {time.perf_counter() - started:.1f}s -> {events_dir}")
    beam_cmd = [sys.executable, "-c", "import sys; from pipelines.cooccur import main; sys.exit(main(sys.argv[1:]))",
                "--events", str(events_dir), "--out", str(work / "beam"), *(beam_args or ["--runner=DirectRunner"])]
    duck_cmd = [sys.executable, __file__, "--duckdb-only", str(events_dir), str(work / "duckdb.parquet")]
    duck_wall, duck_mem, _ = timed_child(duck_cmd)
    beam_wall, beam_mem, beam_out = timed_child(beam_cmd)
    summary = json.loads((work / "beam" / "_SUMMARY.json").read_text())
    print(beam_out.strip())
    print("check:", compare(work / "beam", work / "duckdb.parquet"))
    print(f"{'job':<8} {'wall s':>8} {'peak MiB':>9}")
    print(f"{'duckdb':<8} {duck_wall:>8.2f} {duck_mem:>9.0f}")
    print(f"{'beam':<8} {beam_wall:>8.2f} {beam_mem:>9.0f}   (pipeline {summary['timings_s']['pipeline']:.2f}s)")
    print(f"ratio beam/duckdb wall time: {beam_wall / duck_wall:.2f}x (target <= 3x); "
          f"user pairs {summary['counts']['user_pairs']}, scored pairs {summary['counts']['pairs']}")


if __name__ == "__main__":
    main()
