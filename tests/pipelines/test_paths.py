"""Input resolution and atomic publishing through Beam's FileSystems."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from i2i.core.errors import InputError
from pipelines.paths import RunOutput, resolve_event_files
from pipelines.sharding import shard_ids, split_by_shard, stable_hash
from tests.pipelines.cooccur_reference import T0, events_table, write_jsonl, write_parquet_events


def test_event_inputs_file_partition_table_glob_and_hidden_files(tmp_path):
    day1 = write_parquet_events(tmp_path / "ev" / "dt=2024-01-01" / "part-0.parquet", [("u", "a", "view", T0)])
    day2 = write_jsonl(tmp_path / "ev" / "dt=2024-01-02" / "part-0.jsonl", [])
    write_jsonl(tmp_path / "ev" / "dt=2024-01-02" / "_SUCCESS.jsonl", [])
    write_jsonl(tmp_path / "ev" / ".staging" / "part-0.jsonl", [])
    assert resolve_event_files(str(day1)) == [str(day1)]
    assert resolve_event_files(str(tmp_path / "ev")) == [str(day1), str(day2)]
    assert resolve_event_files(str(tmp_path / "ev"), date="2024-01-02") == [str(day2)]
    assert resolve_event_files(str(tmp_path / "ev" / "dt=2024-01-0*" / "*.parquet")) == [str(day1)]
    with pytest.raises(InputError, match="no events files"):
        resolve_event_files(str(tmp_path / "ev" / "dt=2025-*" / "*"))


def test_publish_replaces_previous_output_in_one_step(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("previous run")
    output = RunOutput.for_dir(str(final))
    output.prepare()
    (tmp_path / output.staging / "new.txt").write_text("this run")
    assert (final / "old.txt").exists()  # nothing visible before publishing
    output.publish({"counts": {"input": 1}})
    assert sorted(p.name for p in final.iterdir()) == ["_SUMMARY.json", "new.txt"]
    assert json.loads((final / "_SUMMARY.json").read_text()) == {"counts": {"input": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_discard_leaves_previous_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("x")
    output = RunOutput.for_dir(str(tmp_path / "out"))
    output.prepare()
    output.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "kept.txt").exists()


def test_shards_agree_across_processes_with_different_hash_seeds():
    code = "from pipelines.sharding import stable_hash; print([stable_hash(f'user-{i}') % 16 for i in range(40)])"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {str([stable_hash(f"user-{i}") % 16 for i in range(40)]) + "\n"}


def test_stable_sharding_keeps_each_key_in_one_shard():
    table = events_table([(f"u{i % 7}", "a", "view", T0 + i) for i in range(50)])
    parts = dict(split_by_shard(table, "user_id", 3))
    assert sum(t.num_rows for t in parts.values()) == 50
    for shard, part in parts.items():
        assert set(shard_ids(part.column("user_id"), 3)) == {shard}
    seen = [set(t.column("user_id").to_pylist()) for t in parts.values()]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 7


def test_publish_object_by_object_replaces_files_and_marks_completion_last(tmp_path):
    final = tmp_path / "out"
    (final / "scores").mkdir(parents=True)
    (final / "scores" / "part-old.parquet").write_text("old")
    (final / "_SUMMARY.json").write_text("{}")
    output = RunOutput.for_dir(str(final))
    output.prepare()
    (tmp_path / output.staging / "scores").mkdir()
    (tmp_path / output.staging / "scores" / "part-00000.parquet").write_text("new")
    output.publish({"counts": {}}, per_object=True)
    files = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
    assert files == ["_SUMMARY.json", "scores/part-00000.parquet"]
    assert json.loads((final / "_SUMMARY.json").read_text()) == {"counts": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
