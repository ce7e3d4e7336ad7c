"""A newly published index version whose files were damaged is refused at load, while the running
``i2i serve`` process keeps answering from the previous version; the operator's way out
(``i2i index rollback``, then a fresh ``i2i index update``) brings the new notes in without a restart.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedding.table import open_table
from i2i.testing.serving import ServerProcess, free_port
from index import jobs
from index.builder import BuildConfig
from index.store import IndexStore

from .conftest import Traffic, scrape, unit_rows, wait_until

MODEL = "m-test"


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 8):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "index.faiss bytes flipped": ("index.faiss", flip_middle),
    "manifest.json truncated": ("manifest.json", truncate_half),
}


def i2i(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2i.app.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def publish_corrupted_update(index_dir: Path, table_url: str, workshop: Path, damage) -> str:
    """Runs a real ``i2i index update`` on a copy, damages one file of the new version, and then
    publishes that version into ``index_dir`` the way a bad copy or disk would: files first, CURRENT last."""
    shutil.copytree(index_dir, workshop)
    summary = jobs.update_job(str(workshop), table_url)
    file_name, corrupt = damage
    corrupt(workshop / "versions" / summary.version / file_name)
    os.rename(workshop / "versions" / summary.version, index_dir / "versions" / summary.version)
    IndexStore(index_dir).set_current(summary.version)
    return summary.version


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_new_version_is_refused_and_the_previous_keeps_serving(tmp_path, corruption):
    rng = np.random.default_rng(3)
    table_url = f"parquet:{tmp_path / 'table'}"
    old_ids = [f"old-{i:04d}" for i in range(600)]
    new_ids = [f"new-{i:04d}" for i in range(100)]
    with open_table(table_url) as table:
        table.put_many(old_ids, unit_rows(rng, len(old_ids)), MODEL)
    index_dir = tmp_path / "index"
    first = jobs.build_job(str(index_dir), table_url, BuildConfig(nlist=8)).version
    metrics_port = free_port()
    server = ServerProcess(index_dir, table_url, ["--reload-interval", "0.1", "--reload-retry", "0.5",
                                                  "--metrics-port", str(metrics_port), "--processes", "2"])
    with server:
        with open_table(table_url) as table:  # the day's new notes, embedded before the index update
            table.put_many(new_ids, unit_rows(rng, len(new_ids)), MODEL)
        histories = [[note] for note in new_ids[:20]] + [old_ids[i:i + 3] for i in range(0, 60, 3)]
        with Traffic(server.address, histories, k=10, threads=2) as traffic:
            assert traffic.wait_for("OK", 20)
            broken = publish_corrupted_update(index_dir, table_url, tmp_path / "workshop", CORRUPTIONS[corruption])
            # Refused, and refused again on each retry, while every call is answered from the old version.
            assert wait_until(lambda: scrape(metrics_port, "i2i_recall_index_reloads_total",
                                             {"outcome": "failed"}) >= 2, timeout=30)
            served_while_broken = traffic.snapshot().get("OK", 0)
            assert wait_until(lambda: traffic.snapshot().get("OK", 0) >= served_while_broken + 20)
            versions, returned = traffic.seen()
            assert set(versions) == {first} and not returned & set(new_ids)

            # The writing jobs refuse to build on it, with a one-line reason.
            refused = i2i("index", "update", "--index-dir", str(index_dir), "--table", table_url)
            assert refused.returncode == 1 and broken in refused.stderr  # a failure, not bad input
            assert len(refused.stderr.strip().splitlines()) == 1
            verify = i2i("index", "info", "--index-dir", str(index_dir), "--verify")
            assert verify.returncode == 1 and broken in verify.stderr

            # Roll back, update afresh: the server swaps to the good new version by itself.
            assert i2i("index", "rollback", "--index-dir", str(index_dir), "--to", first).returncode == 0
            updated = i2i("index", "update", "--index-dir", str(index_dir), "--table", table_url)
            assert updated.returncode == 0, updated.stderr
            fixed = IndexStore(index_dir).current_version()
            assert fixed not in (first, broken)
            assert wait_until(lambda: traffic.seen()[0].get(fixed, 0) >= 10, timeout=30)
        assert set(traffic.codes) == {"OK"}, traffic.codes  # not one call failed through all of it
        assert traffic.returned & set(new_ids)
        assert set(traffic.versions) == {first, fixed}
        # Each of the 2 processes loaded the first version and the fixed one, and nothing else;
        # once both serve the fixed one, the first is shown as no longer served.
        assert scrape(metrics_port, "i2i_recall_index_reloads_total", {"outcome": "ok"}) == 4
        info = "i2i_recall_index_info"
        assert wait_until(lambda: scrape(metrics_port, info, {"index_version": first}) == 0.0, timeout=10)
        assert scrape(metrics_port, info, {"index_version": fixed, "model_version": MODEL}) == 1.0
        assert scrape(metrics_port, "i2i_recall_index_loaded") == 1.0
