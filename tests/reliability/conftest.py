"""Fixtures of the reliability tests: one small world (notes, a day of events, a tiny checkpoint),
the uninterrupted daily run over it as the reference, and helpers to kill ``i2i`` jobs part-way.

Every job under test runs as a real ``python -m i2i.app.cli`` subprocess and is killed with SIGKILL,
the one signal a job cannot clean up after.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest

from embedding.testing import make_notes, make_tiny_checkpoint, notes_table
from i2i.core.io import read_table, write_table
from i2i.core.schemas import EVENTS

DATE = "2025-01-01"
# Small chunks make the embedding job write many parts, so a kill lands between two of them.
EMBED_ARGS = ["--chunk-size", "4", "--batch-size", "2", "--no-progress", "--device", "cpu"]
# Single-threaded numerics: the test hosts have two shared cores.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class World:
    """Inputs shared (read-only) by every run: notes, an events partition, a checkpoint."""

    root: Path
    notes: Path
    events: Path  # hive-partitioned: events/dt=<DATE>/
    checkpoint: Path

    @property
    def partition(self) -> Path:
        return self.events / f"dt={DATE}"

    def daily_config(self, run_root: Path) -> Path:
        """A TOML config for ``i2i run`` whose outputs (runs, table, index) all live under ``run_root``."""
        run_root.mkdir(parents=True, exist_ok=True)
        config = {
            "events": str(self.events), "notes": str(self.notes), "checkpoint": str(self.checkpoint),
            "runs": str(run_root / "runs"), "table": f"parquet:{run_root / 'table'}",
            "index_dir": str(run_root / "index"),
            "beam_args": ["--runner=DirectRunner"],
        }
        embed = {"chunk_size": 4, "batch_size": 2, "progress": False, "device": "cpu",  # as EMBED_ARGS
                 "dead_letter": str(run_root / "embed_dead_letter")}
        lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
        lines += ["[embed]", *(f"{key} = {json.dumps(value)}" for key, value in embed.items())]
        path = run_root / "daily.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


def write_events(directory: Path, note_ids: list[str], users: int = 60, per_user: int = 30, seed: int = 0) -> None:
    """One day of views and clicks that stay mostly inside a theme, plus a JSON Lines file with bad records."""
    rng = random.Random(seed)
    start = dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.timezone.utc)
    groups = 8
    rows = []
    for user in range(users):
        theme = rng.randrange(groups)
        for _ in range(per_user):
            note = note_ids[theme + groups * rng.randrange(len(note_ids) // groups)]
            rows.append({"user_id": f"u{user:03d}", "note_id": note, "action": rng.choice(["view", "click"]),
                         "ts": start + dt.timedelta(seconds=rng.randrange(86400))})
    write_table(pa.Table.from_pylist(rows, schema=EVENTS), directory)
    good = {"user_id": "u999", "note_id": note_ids[0], "action": "click", "ts": f"{DATE}T12:00:00Z"}
    bad = ["not json at all", json.dumps({"user_id": "u1", "note_id": "", "action": "click", "ts": 0}),
           json.dumps({"user_id": "u1", "note_id": "n0001", "action": "like", "ts": 0}), json.dumps(good)]
    (directory / "late.jsonl").write_text("\n".join(bad) + "\n")


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    notes = make_notes(240)
    write_table(notes_table(notes), root / "notes")
    write_events(root / "events" / f"dt={DATE}", [note["note_id"] for note in notes])
    checkpoint = Path(make_tiny_checkpoint(str(root / "checkpoint")))
    return World(root, root / "notes", root / "events", checkpoint)


@dataclass(frozen=True)
class DailyOutputs:
    """Where one complete daily run left its outputs."""

    root: Path

    @property
    def run_folder(self) -> Path:
        return self.root / "runs" / DATE

    @property
    def table_url(self) -> str:
        return f"parquet:{self.root / 'table'}"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def stage_seconds(self, stage: str) -> float:
        """How long a stage took in this run (from its marker): kill delays scale with the host's speed."""
        return float(json.loads((self.run_folder / "_stages" / f"{stage}.json").read_text())["seconds"])


@pytest.fixture(scope="session")
def reference(world, tmp_path_factory) -> DailyOutputs:
    """The uninterrupted daily run (all stages in one process): what every rerun must reproduce."""
    from i2i.app.cli import main as i2i_main

    root = tmp_path_factory.mktemp("reference")
    config = world.daily_config(root)
    assert i2i_main(["run", "--date", DATE, "--config", str(config)]) == 0
    return DailyOutputs(root)


# ---- subprocesses -----------------------------------------------------------------------------

def i2i_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "i2i.app.cli", *args]


def start_job(args: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts ``i2i <args>`` in a child process; its output goes to ``log``."""
    env = {**os.environ, **CHILD_ENV, **(extra_env or {})}
    handle = open(log, "ab")
    try:
        return subprocess.Popen(i2i_command(*args), stdout=handle, stderr=subprocess.STDOUT, env=env)
    finally:
        handle.close()


def run_job(args: list[str], log: Path, timeout: float = 300) -> None:
    """Runs ``i2i <args>`` to completion and fails with the end of its log when it exits non-zero."""
    process = start_job(args, log)
    code = process.wait(timeout=timeout)
    assert code == 0, f"i2i {' '.join(args)} exited {code}:\n{log.read_text()[-3000:]}"


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], delay: float = 0.0,
              timeout: float = 180) -> bool:
    """SIGKILLs ``process`` ``delay`` seconds after ``ready()`` first holds.

    Returns True when the kill interrupted the job, False when it had already exited by itself.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError("the job never reached the point to kill it at")
        time.sleep(0.01)
    if delay:
        time.sleep(delay)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.returncode == -signal.SIGKILL


# ---- comparisons ------------------------------------------------------------------------------

def sorted_rows(table: pa.Table) -> list[dict]:
    """Rows in a canonical order (every column ascending), for order-free equality."""
    return table.sort_by([(name, "ascending") for name in table.column_names]).to_pylist()


def same_rows(left: Path, right: Path) -> bool:
    return sorted_rows(read_table(left)) == sorted_rows(read_table(right))


def embedding_rows(table_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(note ids, model versions, vectors) of a Parquet embedding table, sorted by note id."""
    table = read_table(table_dir, columns=["note_id", "model_version", "embedding"]).sort_by("note_id")
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32)
    vectors = vectors.reshape(table.num_rows, -1)
    return table.column("note_id").to_pylist(), table.column("model_version").to_pylist(), vectors


def assert_same_embeddings(table_dir: Path, reference_dir: Path) -> None:
    ids, versions, vectors = embedding_rows(table_dir)
    ref_ids, ref_versions, ref_vectors = embedding_rows(reference_dir)
    keys = list(zip(ids, versions))
    assert len(set(keys)) == len(keys), "duplicate (note_id, model_version) rows"
    assert ids == ref_ids and versions == ref_versions
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-5)


def assert_same_index(index_dir: Path, reference_dir: Path, table_url: str) -> None:
    """Same notes, same model version and the same exhaustive-search neighbours as the reference."""
    from embedding.table import open_table
    from index.store import IndexStore

    loaded = IndexStore(index_dir).load(hold=False)
    expected = IndexStore(reference_dir).load(hold=False)
    assert loaded.model_version == expected.model_version
    assert loaded.ntotal == expected.ntotal
    assert sorted(loaded.ids.note_ids()) == sorted(expected.ids.note_ids())
    with open_table(table_url) as table:
        ids, vectors = [], []
        for batch_ids, batch_vectors in table.scan(loaded.model_version):
            ids += batch_ids
            vectors.append(batch_vectors)
    queries = np.vstack(vectors)
    _, found = loaded.search(queries, 10, nprobe=loaded.nlist)
    _, wanted = expected.search(queries, 10, nprobe=expected.nlist)
    assert found == wanted


# ---- traffic against a running server ---------------------------------------------------------

class Traffic:
    """Client threads sending Recall calls until stopped; outcomes counted by status code.

    Also records the index versions answered, the slowest call, and the notes returned, so a
    test can assert what was served while something went wrong around the server.
    """

    def __init__(self, target: str, histories: list[list[str]], k: int = 10, threads: int = 3,
                 timeout: float = 2.0) -> None:
        import collections
        import threading

        self.target, self.histories, self.k, self.timeout = target, histories, k, timeout
        self.codes: collections.Counter = collections.Counter()
        self.versions: collections.Counter = collections.Counter()
        self.returned: set[str] = set()
        self.slowest = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(seed,), daemon=True) for seed in range(threads)]

    def _loop(self, seed: int) -> None:
        import grpc

        from recall_server.client import ClientConfig, RecallClient

        rng = random.Random(seed)
        with RecallClient(ClientConfig(target=self.target)) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.recall(rng.choice(self.histories), k=self.k, timeout=self.timeout)
                    code, version, notes = "OK", response.index_version, [n.note_id for n in response.notes]
                except grpc.RpcError as exc:
                    code, version, notes = exc.code().name, None, []
                    time.sleep(0.01)  # a failing server is not hammered in a tight loop
                elapsed = time.monotonic() - started
                with self._lock:
                    self.codes[code] += 1
                    if version:
                        self.versions[version] += 1
                    self.returned.update(notes)
                    self.slowest = max(self.slowest, elapsed)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.codes)

    def seen(self) -> tuple[dict[str, int], set[str]]:
        """(calls answered per index version, every note returned so far)."""
        with self._lock:
            return dict(self.versions), set(self.returned)

    def reset(self) -> None:
        with self._lock:
            self.codes.clear()
            self.versions.clear()
            self.returned.clear()
            self.slowest = 0.0

    def wait_for(self, code: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Waits until at least ``count`` calls ended with ``code``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.snapshot().get(code, 0) >= count:
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def scrape(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of a server's Prometheus /metrics endpoint (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0


def unit_rows(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Unit vectors around a few cluster centres (the shape note embeddings have for an IVF index)."""
    centres = rng.standard_normal((12, dim))
    rows = centres[rng.integers(0, 12, n)] + 0.35 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
