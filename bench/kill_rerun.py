"""Kill/rerun loop over bigger data than the reliability tests use (not run in CI).

For each job (``i2i cooccur`` over a generated events table, ``i2i index update`` over a generated
embedding table), it first times an uninterrupted run (the reference output and duration), then
``--rounds`` times starts the job as a subprocess and SIGKILLs it at a random moment between 5% and
100% of the reference duration. After every kill it checks what a reader would see: the output
must be absent, the previous complete output, or a complete new one equal to the reference.
Finally it reruns the job to completion and compares. Prints, per job: rounds, kills that landed
mid-run, what the reader saw, hidden debris left behind, and the rerun's time as a ratio of the
uninterrupted run's.

    python bench/kill_rerun.py [--rounds 10] [--events 300000] [--notes 100000] [--jobs cooccur,index]
                               [--work DIR] [--seed 0]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class LoopConfig:
    rounds: int = 10
    events: int = 300_000
    users: int = 20_000
    notes: int = 100_000
    dim: int = 32
    jobs: tuple[str, ...] = ("cooccur", "index")
    work: Path = Path(tempfile.gettempdir()) / "i2i-bench-kill-rerun"
    seed: int = 0


@dataclass
class JobLoop:
    """One job: how to run it, what a reader sees, and how to compare with the reference."""

    name: str
    argv: list[str]
    observe: Callable[[], str]  # "absent" | "previous" | "complete" | anything else = broken
    debris: Callable[[], int]


def i2i(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "i2i.app.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)


def timed_run(argv: list[str]) -> float:
    started = time.perf_counter()
    code = i2i(argv).wait()
    if code != 0:
        raise SystemExit(f"i2i {' '.join(argv)} exited {code}")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- data
def write_events(cfg: LoopConfig, directory: Path) -> None:
    import pyarrow as pa

    from i2i.core.io import write_table
    from i2i.core.schemas import EVENTS

    rng = np.random.default_rng(cfg.seed)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    offsets = rng.integers(0, 86_400_000, cfg.events).astype("timedelta64[ms]")
    ts = np.datetime64(start.replace(tzinfo=None), "ms") + offsets
    table = pa.table({
        "user_id": pa.array([f"u{i:06d}" for i in rng.integers(0, cfg.users, cfg.events)], pa.string()),
        "note_id": pa.array([f"n{i:06d}" for i in rng.zipf(1.3, cfg.events) % 20_000], pa.string()),
        "action": pa.array(np.where(rng.random(cfg.events) < 0.4, "click", "view").tolist(), pa.string()),
        "ts": pa.array(ts, pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
    }, schema=EVENTS)
    write_table(table, directory, rows_per_file=50_000)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    centres = rng.standard_normal((64, dim))
    rows = centres[rng.integers(0, 64, n)] + 0.35 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- jobs
def sorted_rows(path: Path) -> list:
    from i2i.core.io import read_table

    table = read_table(path)
    return table.sort_by([(name, "ascending") for name in table.column_names]).to_pylist()


def cooccur_loop(cfg: LoopConfig, work: Path) -> tuple[JobLoop, Callable[[], None]]:
    events = work / "events"
    if not events.exists():
        write_events(cfg, events)
    reference, out = work / "reference", work / "out"
    argv = ["cooccur", "--events", str(events), "--out", str(out), "--runner=DirectRunner"]
    expected: dict[str, list] = {}

    def setup() -> None:
        shutil.rmtree(out, ignore_errors=True)
        for hidden in work.glob(".out.*"):
            shutil.rmtree(hidden, ignore_errors=True)

    def observe() -> str:
        if not out.exists():
            return "absent"
        if not expected:
            for name in ("scores", "related"):
                expected[name] = sorted_rows(reference / name)
        same = all(sorted_rows(out / name) == expected[name] for name in ("scores", "related"))
        return "complete" if same else "differs"

    if not reference.exists():
        timed_run(["cooccur", "--events", str(events), "--out", str(reference), "--runner=DirectRunner"])
    return JobLoop("cooccur", argv, observe, lambda: len(list(work.glob(".out.*")))), setup


def index_loop(cfg: LoopConfig, work: Path) -> tuple[JobLoop, Callable[[], None]]:
    from embedding.table import open_table
    from index import jobs
    from index.builder import BuildConfig
    from index.store import IndexStore

    table_url = f"parquet:{work / 'table'}"
    base, index_dir = work / "base-index", work / "index"
    rng = np.random.default_rng(cfg.seed)
    if not base.exists():
        ids = [f"n{i:07d}" for i in range(cfg.notes)]
        with open_table(table_url) as table:
            table.put_many(ids, unit_rows(rng, cfg.notes, cfg.dim), "bench-m1")
        jobs.build_job(str(base), table_url, BuildConfig())
        new = [f"new{i:07d}" for i in range(cfg.notes // 10)]
        with open_table(table_url) as table:
            table.put_many(new, unit_rows(rng, len(new), cfg.dim), "bench-m1")
    argv = ["index", "update", "--index-dir", str(index_dir), "--table", table_url]
    parent = IndexStore(base).current_version()

    def setup() -> None:
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.copytree(base, index_dir)

    def observe() -> str:
        store = IndexStore(index_dir)
        current = store.current_version()
        loaded = store.load(current, hold=False)  # raises if CURRENT names anything incomplete
        if current == parent:
            return "previous"
        return "complete" if loaded.ntotal == cfg.notes + cfg.notes // 10 else "differs"

    def debris() -> int:
        versions = index_dir / "versions"
        return len([p for p in versions.iterdir() if p.name.startswith(".")]) if versions.exists() else 0

    return JobLoop("index update", argv, observe, debris), setup


# --------------------------------------------------------------------------- loop
def run_loop(job: JobLoop, setup: Callable[[], None], rounds: int, rng: random.Random) -> dict:
    setup()
    reference_seconds = timed_run(job.argv)
    assert job.observe() == "complete", f"{job.name}: the uninterrupted run does not match the reference"
    setup()
    seen: Counter = Counter()
    landed = 0
    for round_number in range(rounds):
        process = i2i(job.argv)
        time.sleep(rng.uniform(0.05, 1.0) * reference_seconds)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.wait()
        state = job.observe()
        seen[state] += 1
        print(f"  {job.name} round {round_number + 1}/{rounds}: "
              f"{'killed' if process.returncode == -signal.SIGKILL else 'finished'}, reader sees {state}", flush=True)
        if state == "complete":
            setup()  # start the next round from the previous state again
    debris = job.debris()
    rerun_seconds = timed_run(job.argv)
    final = job.observe()
    return {"job": job.name, "rounds": rounds, "killed_mid_run": landed, "reader_saw": dict(seen),
            "debris_left": debris, "final": final, "reference_s": reference_seconds, "rerun_s": rerun_seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=LoopConfig.rounds)
    p.add_argument("--events", type=int, default=LoopConfig.events)
    p.add_argument("--notes", type=int, default=LoopConfig.notes)
    p.add_argument("--jobs", default=",".join(LoopConfig.jobs), help="comma-separated: cooccur, index")
    p.add_argument("--work", type=Path, default=LoopConfig.work)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    cfg = LoopConfig(rounds=args.rounds, events=args.events, notes=args.notes,
                     jobs=tuple(j.strip() for j in args.jobs.split(",") if j.strip()), work=args.work, seed=args.seed)
    makers = {"cooccur": cooccur_loop, "index": index_loop}
    unknown = set(cfg.jobs) - set(makers)
    if unknown:
        p.error(f"unknown jobs {sorted(unknown)}; choose from {sorted(makers)}")
    rng = random.Random(cfg.seed)
    results = []
    for name in cfg.jobs:
        work = cfg.work / f"{name}-{cfg.events if name == 'cooccur' else cfg.notes}"
        work.mkdir(parents=True, exist_ok=True)
        print(f"{name}: preparing data in {work}", flush=True)
        job, setup = makers[name](cfg, work)
        results.append(run_loop(job, setup, cfg.rounds, rng))
    print("\njob            rounds  killed  reader saw                               debris  final     rerun/ref")
    broken = False
    for r in results:
        saw = ", ".join(f"{k} {v}" for k, v in sorted(r["reader_saw"].items()))
        ratio = r["rerun_s"] / r["reference_s"]
        print(f"{r['job']:<14} {r['rounds']:>6}  {r['killed_mid_run']:>6}  {saw:<40} {r['debris_left']:>6}  "
              f"{r['final']:<9} {ratio:.2f} ({r['rerun_s']:.1f}s / {r['reference_s']:.1f}s)")
        broken |= r["final"] != "complete" or any(k not in ("absent", "previous", "complete") for k in r["reader_saw"])
    print("every state a reader saw was complete or untouched" if not broken else "BROKEN OUTPUT SEEN")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
