"""The results script end to end on a small dataset with tiny backbones: the protocol it promises.

Seeds per variant (three for basic and notellm2 in the real run, here two, and one for the other
variants), the paired notellm2 - basic difference, the shared vision cache and the 2% val split are
what the published table rests on, so the smoke run is checked for each of them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_results_table_follows_the_protocol(tmp_path):
    work = tmp_path / "work"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results_table.py"), "--work", str(work), "--quick",
         "--datasets", "fashion-notes", "--variants", "basic,notellm2,text_only", "--seeds", "42,43",
         "--baselines", "bm25", "--bootstrap", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    results = json.loads((work / "results.json").read_text())["fashion-notes"]
    runs = {row["method"]: row["metrics"].get("runs") for row in results["rows"]}
    assert runs == {"random": 2, "oracle": 1, "bm25": 1, "zero-shot basic": 1, "zero-shot notellm2": 1,
                    "zero-shot text_only": 1, "basic": 2, "notellm2": 2, "text_only": 1}
    checkpoints = sorted(p.name for p in (work / "fashion-notes" / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["basic_seed42", "basic_seed43", "notellm2_seed42", "notellm2_seed43",
                           "text_only_seed42", "zero_shot_basic", "zero_shot_notellm2", "zero_shot_text_only"]
    difference = results["paired_differences"]["notellm2 - basic"]
    assert difference["pairs_compared"] == next(r for r in results["rows"] if r["method"] == "basic")["metrics"]["pairs"]
    assert set(difference["groups"]) == {"all", "short_query", "short_target"}
    # what training gave each variant: its row against its own untrained checkpoint's row, on the same pairs
    recall = {row["method"]: row["metrics"]["groups"]["all"]["recall"]["R@100"] for row in results["rows"]}
    for variant in ("basic", "notellm2", "text_only"):
        gain = results["paired_differences"][f"{variant} - its untrained checkpoint"]["groups"]["all"]["R@100"]
        assert (gain["a"], gain["b"]) == (pytest.approx(recall[variant]), pytest.approx(recall[f"zero-shot {variant}"]))
        assert gain["difference"]["value"] == pytest.approx(recall[variant] - recall[f"zero-shot {variant}"])

    pairs_summary = json.loads((work / "fashion-notes" / "pairs" / "_SUMMARY.json").read_text())
    assert pairs_summary["config"]["val_fraction"] == 0.02
    # the image checkpoints' evaluations share the frozen encoder's features: written once, read by the rest
    assert any((work / "fashion-notes" / "vision_cache").rglob("features.npy"))
    table = (work / "results.md").read_text()
    assert "Paired bootstrap difference notellm2 - basic" in table and "| text_only | trained | 1 |" in table
    assert "Each trained variant minus its untrained checkpoint" in table
    # the training summary: one row per trained checkpoint, so a seed that failed to learn shows
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant | seed |"))
    body = lines[header + 2:]
    end = next(i for i, line in enumerate(body + [""]) if not line.startswith("|"))
    training_rows = [line.split(" | ")[:2] for line in body[:end]]
    trained = {(row["method"], t["seed"]) for row in results["rows"] for t in row["metrics"].get("training", [])}
    assert trained == {("basic", 42), ("basic", 43), ("notellm2", 42), ("notellm2", 43), ("text_only", 42)}
    assert sorted((m.lstrip("| "), int(s)) for m, s in training_rows) == sorted(trained)
