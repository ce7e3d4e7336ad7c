"""Jobs killed with SIGKILL part-way, then rerun: the outputs equal an uninterrupted run's.

Nothing half-written is ever visible, nothing is lost or duplicated, and a kill while a complete
output exists leaves that output as it was. Kill points are observed from outside (a staging
directory appears, a table grows, a stage marker is written) plus a random delay, since only the
index store offers a hook (``I2I_INDEX_PAUSE_BEFORE_PUBLISH``).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from embedding.table import open_table
from embedding.table.parquet import ParquetEmbeddingTable
from i2i.core.io import read_table
from index import jobs
from index.builder import BuildConfig
from index.store import PAUSE_ENV, STAGING_PREFIX, IndexStore

from .conftest import (
    DATE,
    EMBED_ARGS,
    assert_same_embeddings,
    assert_same_index,
    kill_when,
    run_job,
    same_rows,
    sorted_rows,
    start_job,
    unit_rows,
)


def appears(parent: Path, prefix: str) -> Callable[[], bool]:
    """True once an entry named ``prefix...`` that did not exist at the time of this call shows up."""
    before = {p.name for p in parent.glob(f"{prefix}*")} if parent.exists() else set()
    return lambda: parent.exists() and any(p.name not in before for p in parent.glob(f"{prefix}*"))


def kill_beam_job_repeatedly(args: list[str], out: Path, log: Path, delays: list[float],
                             visible_ok: Callable[[], bool]) -> int:
    """Starts the job once per delay and kills it that long after its staging directory appears.

    After every attempt the output directory is either absent or complete (``visible_ok``).
    Returns how many attempts were really interrupted.
    """
    interrupted = 0
    for delay in delays:
        staging_started = appears(out.parent, f".{out.name}.staging-")
        interrupted += kill_when(start_job(args, log), staging_started, delay)
        assert not out.exists() or visible_ok(), f"a half-written {out.name} is visible after a kill"
    return interrupted


def test_cooccur_killed_part_way_then_rerun_equals_uninterrupted(world, reference, tmp_path):
    out = tmp_path / "cooccur"
    expected = reference.run_folder / "cooccur"
    args = ["cooccur", "--events", str(world.partition), "--out", str(out), "--runner=DirectRunner"]
    log = tmp_path / "jobs.log"
    rng = random.Random(11)

    def complete() -> bool:
        return all(same_rows(out / name, expected / name) for name in ("scores", "related", "dead_letter"))

    seconds = reference.stage_seconds("cooccur")
    delays = [0.0, rng.uniform(0.1, 0.4) * seconds, rng.uniform(0.4, 0.8) * seconds]
    interrupted = kill_beam_job_repeatedly(args, out, log, delays, complete)
    assert interrupted >= 2, "the kills came too late to interrupt the job"
    run_job(args, log)
    assert complete()
    # Killed again, with other options, while that complete output exists: a reader then sees the
    # previous output as it was, or (a kill after the final rename) the whole new one, never a mix.
    other = [*args, "--top-t", "1"]

    def previous_or_new() -> bool:
        top_t = json.loads((out / "_SUMMARY.json").read_text())["config"]["top_t"]
        if top_t == 3:
            return complete()
        best = read_table(expected / "related").filter(pc.equal(pc.field("rank"), 1))
        return top_t == 1 and same_rows(out / "scores", expected / "scores") and \
            sorted_rows(read_table(out / "related")) == sorted_rows(best)

    interrupted = kill_beam_job_repeatedly(other, out, log, [rng.uniform(0.2, 0.6) * seconds], previous_or_new)
    assert interrupted == 1 and previous_or_new()


def test_pairs_killed_part_way_then_rerun_equals_uninterrupted(world, reference, tmp_path):
    out = tmp_path / "pairs"
    expected = reference.run_folder / "pairs"
    args = ["pairs", "--related", str(reference.run_folder / "cooccur" / "related"), "--notes", str(world.notes),
            "--out", str(out), "--runner=DirectRunner"]
    log = tmp_path / "jobs.log"
    rng = random.Random(12)

    def complete() -> bool:
        return same_rows(out, expected)

    seconds = reference.stage_seconds("pairs")
    delays = [0.0, rng.uniform(0.1, 0.4) * seconds, rng.uniform(0.4, 0.8) * seconds]
    interrupted = kill_beam_job_repeatedly(args, out, log, delays, complete)
    assert interrupted >= 2, "the kills came too late to interrupt the job"
    run_job(args, log)
    assert complete()
    # Killed again, with another val fraction, while that complete output exists: the previous
    # output as it was, or the whole new one.
    other = [*args, "--val-fraction", "0.5"]

    def previous_or_new() -> bool:
        summary = json.loads((out / "_SUMMARY.json").read_text())
        if summary["config"]["val_fraction"] == 0.1:
            return complete()
        pairs = read_table(out)
        splits = pairs.column("split").to_pylist()
        unsplit = read_table(expected).drop_columns(["split"])
        same_pairs = sorted_rows(pairs.drop_columns(["split"])) == sorted_rows(unsplit)
        return same_pairs and splits.count("val") == summary["counts"]["val"] > 0

    interrupted = kill_beam_job_repeatedly(other, out, log, [rng.uniform(0.2, 0.6) * seconds], previous_or_new)
    assert interrupted == 1 and previous_or_new()


def test_embed_killed_part_way_then_rerun_equals_uninterrupted(world, reference, tmp_path):
    table_dir = tmp_path / "table"
    args = ["embed", "--notes", str(world.notes), "--checkpoint", str(world.checkpoint),
            "--table", f"parquet:{table_dir}", *EMBED_ARGS, "--dead-letter", str(tmp_path / "dead_letter")]
    log = tmp_path / "jobs.log"
    table = ParquetEmbeddingTable(table_dir)
    rng = random.Random(13)
    total_parts = len(ParquetEmbeddingTable(reference.root / "table").parts())
    # First kill after a few chunks, the second one further on, while the rerun resumes.
    target = rng.randrange(3, 15)
    for _ in range(2):
        assert kill_when(start_job(args, log), lambda: len(table.parts()) >= target), "the job ended before the kill"
        assert_no_duplicate_keys(table_dir)
        target = len(table.parts()) + rng.randrange(5, 15)
    survived = len(table.parts())
    assert survived < total_parts
    run_job(args, log)
    assert_same_embeddings(table_dir, reference.root / "table")
    assert "already present " + str(survived * 4) in log.read_text()  # the rerun resumed, not restarted


def assert_no_duplicate_keys(table_dir: Path) -> None:
    rows = read_table(table_dir, columns=["note_id", "model_version"])
    keys = list(zip(rows.column("note_id").to_pylist(), rows.column("model_version").to_pylist()))
    assert len(keys) == len(set(keys))


def test_index_update_killed_part_way_then_rerun_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(5)
    table_url = f"parquet:{tmp_path / 'table'}"
    note_ids = [f"note-{i:05d}" for i in range(1500)]
    with open_table(table_url) as table:
        table.put_many(note_ids, unit_rows(rng, len(note_ids)), "m-test")
    index_dir, reference_dir = tmp_path / "index", tmp_path / "reference-index"
    jobs.build_job(str(index_dir), table_url, BuildConfig(nlist=16))
    # The day's changes: new notes, changed vectors, deleted notes.
    with open_table(table_url) as table:
        table.put_many([f"new-{i:04d}" for i in range(300)] + note_ids[:10], unit_rows(rng, 310), "m-test")
    deletes = tmp_path / "deletes.txt"
    deletes.write_text("\n".join(note_ids[100:120]) + "\n")
    shutil.copytree(index_dir, reference_dir)
    jobs.update_job(str(reference_dir), table_url, deletes_path=str(deletes))

    args = ["index", "update", "--index-dir", str(index_dir), "--table", table_url, "--deletes", str(deletes)]
    log = tmp_path / "jobs.log"
    store = IndexStore(index_dir)
    # Killed with every file of the new version written, just before it is published.
    staged = appears(index_dir / "versions", STAGING_PREFIX)
    assert kill_when(start_job(args, log, {PAUSE_ENV: "30"}), staged, delay=0.5)
    assert store.current_version() == "v000001" and store.versions() == ["v000001"]
    # Killed at random moments of a normal run.
    random_delays = random.Random(14)
    for _ in range(2):
        process = start_job(args, log)
        kill_when(process, lambda: True, delay=random_delays.uniform(0.5, 2.5))
        current = store.current_version()
        store.load(current, hold=False)  # CURRENT always names a complete, verified version
        if current != "v000001":  # the kill came after publishing: the update is complete
            break
    if store.current_version() == "v000001":
        run_job(args, log)
    parent = store.manifest(store.current_version()).parent
    assert parent == "v000001"
    assert_same_index(index_dir, reference_dir, table_url)
    run_job(["index", "gc", "--index-dir", str(index_dir), "--keep", "1"], log)
    assert not [p for p in (index_dir / "versions").iterdir() if p.name.startswith(".")]


def test_daily_run_killed_in_each_stage_then_rerun_equals_uninterrupted(world, reference, tmp_path):
    config = world.daily_config(tmp_path / "daily")
    args = ["run", "--date", DATE, "--config", str(config)]
    log = tmp_path / "jobs.log"
    ours = tmp_path / "daily"
    stages = ours / "runs" / DATE / "_stages"
    table = ParquetEmbeddingTable(ours / "table")
    rng = random.Random(15)
    pairs_delay = rng.uniform(0.0, 0.8) * reference.stage_seconds("pairs")
    index_delay = rng.uniform(0.0, 0.5) * reference.stage_seconds("index")
    kill_points = [
        ("pairs", lambda: (stages / "cooccur.json").exists(), pairs_delay),
        ("embed", lambda: len(table.parts()) >= 20, 0.0),
        ("index", lambda: (stages / "embed.json").exists(), index_delay),
    ]
    interrupted = []
    for stage, ready, delay in kill_points:
        if kill_when(start_job(args, log), ready, delay):
            interrupted.append(stage)
    assert len(interrupted) >= 2, f"only {interrupted} were interrupted"
    assert "pairs" not in interrupted or not (ours / "runs" / DATE / "pairs").exists() or \
        same_rows(ours / "runs" / DATE / "pairs", reference.run_folder / "pairs")
    run_job(args, log)
    assert sorted(p.stem for p in stages.glob("*.json")) == ["cooccur", "embed", "index", "pairs"]
    for name in ("scores", "related", "dead_letter"):
        assert same_rows(ours / "runs" / DATE / "cooccur" / name, reference.run_folder / "cooccur" / name)
    assert same_rows(ours / "runs" / DATE / "pairs", reference.run_folder / "pairs")
    assert_same_embeddings(ours / "table", reference.root / "table")
    assert_same_index(ours / "index", reference.index_dir, f"parquet:{ours / 'table'}")
