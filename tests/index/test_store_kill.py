"""A process killed in the middle of an update leaves CURRENT on the previous, intact version."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from embedding.table import open_table
from index import jobs
from index.builder import BuildConfig
from index.store import PAUSE_ENV, IndexStore


def start_update(index_dir, table_url, pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: str(pause), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "i2i.app.cli", "index", "update", "--index-dir", str(index_dir), "--table", table_url]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def assert_current_intact(store: IndexStore, expected_ntotal: set[int]) -> str:
    loaded = store.load(hold=False)  # verifies every checksum
    assert loaded.ntotal in expected_ntotal
    return loaded.version


def test_sigkill_between_writing_and_publishing_keeps_the_old_current(tmp_path, corpus, make_vectors, model_version):
    index_dir = tmp_path / "idx"
    jobs.build_job(str(index_dir), corpus.url, BuildConfig(nlist=8))
    with open_table(corpus.url) as table:
        table.put_many(["late-1", "late-2"], make_vectors(np.random.default_rng(1), 2), model_version)
    store = IndexStore(index_dir)
    process = start_update(index_dir, corpus.url, pause=30)
    staging = None
    deadline = time.monotonic() + 60
    while staging is None and time.monotonic() < deadline:
        found = [p for p in (index_dir / "versions").iterdir() if p.name.startswith(".staging-")]
        if found and (found[0] / "manifest.json").exists():
            staging = found[0]
        time.sleep(0.05)
    assert staging is not None, "the update never reached its publish step"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.current_version() == "v000001"
    assert store.versions() == ["v000001"]
    assert assert_current_intact(store, {len(corpus.note_ids)}) == "v000001"
    # The next update takes the lock the dead process held, publishes, and retention clears the debris.
    summary = jobs.update_job(str(index_dir), corpus.url)
    assert summary.version == "v000002" and summary.ntotal == len(corpus.note_ids) + 2
    assert summary.gc.staging_removed == 1
    assert not [p for p in (index_dir / "versions").iterdir() if p.name.startswith(".")]


def test_sigkill_at_random_moments_always_leaves_a_loadable_current(tmp_path, corpus):
    index_dir = tmp_path / "idx"
    jobs.build_job(str(index_dir), corpus.url, BuildConfig(nlist=8))
    store = IndexStore(index_dir)
    started = time.perf_counter()
    start_update(index_dir, corpus.url).wait()
    full_run = time.perf_counter() - started
    rng = random.Random(3)
    for _ in range(4):
        process = start_update(index_dir, corpus.url)
        time.sleep(rng.uniform(0.3, 1.0) * full_run)
        process.send_signal(signal.SIGKILL)
        process.wait()
        current = assert_current_intact(store, {len(corpus.note_ids)})
        assert current in store.versions()
