"""Exit codes a scheduler acts on, read from the real ``i2i`` command line in a subprocess:
2 bad input (fix first), 75 temporary (retry later), 1 failure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from embedding.table import open_table
from i2i.testing.serving import free_port
from index.builder import BuildConfig
from index.jobs import build_job
from index.store import IndexStore


def i2i(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2i.app.cli", *args], capture_output=True, text=True, timeout=timeout)


def small_index(tmp_path: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    url = f"parquet:{tmp_path / 'table'}"
    with open_table(url) as table:
        table.put_many([f"n{i}" for i in range(60)], vectors, "m1")
    index_dir = tmp_path / "index"
    build_job(str(index_dir), url, BuildConfig(nlist=2))
    return index_dir, url


def test_bad_input_exits_2(tmp_path):
    result = i2i("index", "build", "--index-dir", str(tmp_path / "index"), "--table", f"parquet:{tmp_path / 'none'}")
    assert result.returncode == 2, result.stderr
    assert "i2i index: error:" in result.stderr


def test_redis_down_exits_75(tmp_path):
    result = i2i("index", "build", "--index-dir", str(tmp_path / "index"), "--table", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 75, result.stderr
    assert "unavailable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_redis_on_a_wrong_host_exits_75(tmp_path):
    result = i2i("index", "build", "--index-dir", str(tmp_path / "index"), "--table", "redis://no-such-host.invalid:6379/0")
    assert result.returncode == 75, result.stderr
    assert "unavailable" in result.stderr


def test_held_index_lock_exits_75(tmp_path):
    index_dir, url = small_index(tmp_path)
    with IndexStore(index_dir).writer_lock():
        result = i2i("index", "update", "--index-dir", str(index_dir), "--table", url)
    assert result.returncode == 75, result.stderr
    assert "locked by a running index job" in result.stderr


def test_index_integrity_failure_exits_1(tmp_path):
    index_dir, _ = small_index(tmp_path)
    version = IndexStore(index_dir).current_version()
    with open(index_dir / "versions" / version / "index.faiss", "ab") as handle:
        handle.write(b"\0")
    result = i2i("index", "info", "--index-dir", str(index_dir), "--verify")
    assert result.returncode == 1, result.stderr
    assert "checksum mismatch" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_recall_against_an_unavailable_server_exits_75():
    result = i2i("recall", "--server", f"127.0.0.1:{free_port()}", "--history", "n1", "--timeout", "3")
    assert result.returncode == 75, result.stderr
    assert "UNAVAILABLE" in result.stderr
