import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from i2i.core.errors import InputError
from i2i.core.io import atomic_dir, read_table, write_table
from i2i.core.schemas import EVENTS
from pipelines.read import read_events


def test_jsonl_and_parquet_events_with_dead_letters(tmp_path):
    source = tmp_path / "events"
    source.mkdir()
    lines = [
        {"user_id": "u1", "note_id": "a", "action": "view", "ts": "2026-01-01T00:00:00Z"},
        {"user_id": "u1", "note_id": "b", "action": "click", "ts": 1767225660000},
        {"user_id": "u2", "note_id": "a", "action": "purchase", "ts": 1},
    ]
    (source / "day1.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    parquet = pa.table({"user_id": ["u3", ""], "note_id": ["c", "d"], "action": ["click", "view"],
                        "ts": pa.array([1767225600000, 1767225600000], pa.timestamp("ms", tz="UTC"))})
    pq.write_table(parquet, source / "day2.parquet")
    good, dead = read_events(source)
    assert good.schema.equals(EVENTS)
    assert good.num_rows == 3 and dead.num_rows == 3
    assert sorted(dead.column("reason").to_pylist()) == sorted(
        ["unknown action: 'purchase'", "empty id: user_id", "invalid JSON: Expecting value"])


def test_unknown_file_type_is_a_clear_error(tmp_path):
    (tmp_path / "events.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported events file type"):
        read_events(tmp_path)


def test_write_table_replaces_atomically(tmp_path):
    target = tmp_path / "out"
    write_table(pa.table({"x": [1, 2]}), target)
    write_table(pa.table({"x": [3]}), target)
    assert read_table(target).column("x").to_pylist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_inside_atomic_dir_keeps_previous_output(tmp_path):
    target = tmp_path / "out"
    write_table(pa.table({"x": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            pq.write_table(pa.table({"x": [9]}), tmp / "part.parquet")
            raise RuntimeError("job failed")
    assert read_table(target).column("x").to_pylist() == [1]


def test_killed_writer_leaves_previous_output(tmp_path):
    target = tmp_path / "out"
    write_table(pa.table({"x": [1]}), target)
    script = (
        "import os, signal, pyarrow as pa, pyarrow.parquet as pq\n"
        "from i2i.core.io import atomic_dir\n"
        f"with atomic_dir({str(target)!r}) as tmp:\n"
        "    pq.write_table(pa.table({'x': [2]}), tmp / 'part.parquet')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script])
    assert result.returncode == -9
    assert read_table(target).column("x").to_pylist() == [1]
    assert os.listdir(target) == ["part-00000.parquet"]


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="table not found"):
        read_table(tmp_path / "nope")
