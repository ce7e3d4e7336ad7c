"""The versioned directory: publish, load with checksum verification, rollback, retention, locking."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from i2i.core.errors import InputError
from index import jobs
from index.builder import BuildConfig
from index.store import IndexIntegrityError, IndexLocked, IndexStore

CONFIG = BuildConfig(nlist=8)


def build_versions(index_dir, corpus, count: int) -> IndexStore:
    jobs.build_job(str(index_dir), corpus.url, CONFIG, keep=100)
    for _ in range(count - 1):
        jobs.rebuild_job(str(index_dir), corpus.url, nlist=8, keep=100)
    return IndexStore(index_dir)


def test_build_publishes_a_loadable_version_named_by_current(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 1)
    assert store.current_version() == "v000001"
    assert (tmp_path / "idx" / "CURRENT").read_text() == "v000001\n"
    loaded = store.load()
    manifest = loaded.manifest
    assert manifest["version"] == "v000001" and manifest["parent"] is None
    assert manifest["ntotal"] == loaded.ntotal == len(corpus.note_ids)
    assert manifest["dim"] == 16 and manifest["metric"] == "ip" and manifest["factory"] == "IVF8,Flat"
    assert set(manifest["files"]) >= {"index.faiss", "ids.parquet"}
    _, names = loaded.search(corpus.vectors[:3], 1, nprobe=8)
    assert [row[0] for row in names] == corpus.note_ids[:3]


def test_checksum_mismatch_is_refused_naming_the_file(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 1)
    path = tmp_path / "idx" / "versions" / "v000001" / "index.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=r"checksum mismatch for .*index\.faiss"):
        store.load()
    (tmp_path / "idx" / "versions" / "v000001" / "ids.parquet").unlink()
    with pytest.raises(IndexIntegrityError, match=r"ids\.parquet is missing"):
        store.load()


def test_rollback_switches_current_and_refuses_unknown_or_corrupt_targets(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 3)
    assert store.versions() == ["v000001", "v000002", "v000003"]
    assert jobs.rollback_job(str(store.root), "v000001") == ("v000003", "v000001")
    assert store.load().version == "v000001"
    with pytest.raises(InputError, match="v000009 not found"):
        jobs.rollback_job(str(store.root), "v000009")
    (store.root / "versions" / "v000002" / "ids.parquet").write_bytes(b"garbage")
    with pytest.raises(IndexIntegrityError, match=r"checksum mismatch for .*ids\.parquet"):
        jobs.rollback_job(str(store.root), "v000002")
    assert store.current_version() == "v000001"
    # A child of a rolled-back CURRENT gets the next free name and the rolled-back parent.
    summary = jobs.update_job(str(store.root), corpus.url)
    assert (summary.version, summary.parent) == ("v000004", "v000001")


def test_retention_keeps_newest_current_and_versions_held_by_live_processes(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 5)
    jobs.rollback_job(str(store.root), "v000002")
    held_here = store.load("v000003")
    # Another live process holds v000001; it must survive gc until that process exits.
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from index.store import IndexStore; "
                               f"loaded = IndexStore({str(store.root)!r}).load('v000001'); "
                               "print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        report = jobs.gc_job(str(store.root), keep=1)
        assert report.removed == ["v000004"]
        assert store.versions() == ["v000001", "v000002", "v000003", "v000005"]
        assert sorted(report.held) == ["v000001", "v000003"]
    finally:
        holder.kill()
        holder.wait()
    held_here.release()
    report = jobs.gc_job(str(store.root), keep=1)
    assert sorted(report.removed) == ["v000001", "v000003"]
    assert store.versions() == ["v000002", "v000005"] and store.current_version() == "v000002"
    with pytest.raises(InputError, match="at least 1"):
        jobs.gc_job(str(store.root), keep=0)


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 1)
    with store.writer_lock():
        with pytest.raises(IndexLocked, match="locked by a running index job"):
            jobs.update_job(str(store.root), corpus.url)


def test_published_versions_are_never_modified_by_later_jobs(tmp_path, corpus):
    store = build_versions(tmp_path / "idx", corpus, 1)
    before = {p.name: p.read_bytes() for p in (store.root / "versions" / "v000001").iterdir()}
    jobs.update_job(str(store.root), corpus.url, deletes_path=None)
    jobs.rebuild_job(str(store.root), corpus.url, nlist=4)
    after = {p.name: p.read_bytes() for p in (store.root / "versions" / "v000001").iterdir()}
    assert before == after
    store.verify("v000001")


def test_loading_without_an_index_says_to_build_first(tmp_path):
    with pytest.raises(InputError, match="run 'i2i index build' first"):
        IndexStore(tmp_path / "nothing").load()
    assert IndexStore(tmp_path / "nothing").current_version() is None
    assert np.array(IndexStore(tmp_path / "nothing").versions()).size == 0
