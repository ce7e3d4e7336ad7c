"""The whole system end to end, as `i2i demo` runs it, on tiny backbones and small data."""
import json
import subprocess
import sys

import pytest

from i2i.core.io import read_table


@pytest.mark.slow
def test_demo_day_one_and_next_day(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "i2i.app.cli", "demo", "--out", str(out), "--backbone", "tiny",
               "--notes", "300", "--users", "120", "--days", "5", "--train-steps", "3", "--batch-size", "8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())

    assert summary["data"]["new_notes_next_day"] > 0
    assert summary["recall_day_one"] and all(len(notes) == 10 for notes in summary["recall_day_one"].values())
    reload = summary["reload"]
    assert reload["to"] != reload["from"] and reload["requests_failed"] == 0 and reload["requests_ok"] > 0
    after = summary["recall_next_day"]
    assert after["new_recalled"] and not after["deleted_recalled"]
    assert not set(after["history"]) & set(after["recalled"])  # history excluded by default

    deleted = set(read_table(out / "data" / "next_day" / "deletes").column("note_id").to_pylist())
    assert not deleted & set(read_table(out / "data" / "notes").column("note_id").to_pylist())
    for stage in ("co-occurrence", "training pairs", "embed", "FAISS", "recall", "evaluate"):
        assert stage in result.stdout
    report = out / "report" / "index.html"
    assert f"report of the next-day replay: {report}" in result.stdout and report.exists()
    assert summary["replay"]["users"] > 0 and (out / "replay" / "replay.json").exists()
    assert (out / "eval").exists() and (out / "index" / "CURRENT").read_text().strip() == reload["to"]
