"""``i2i cooccur`` end to end: inputs, outputs, summary, atomic reruns and bad input."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from i2i.app.cli import main as i2i_main
from i2i.core.errors import InputError
from i2i.core.io import read_table
from i2i.core.schemas import validate
from pipelines.cooccur import check_event_counts, run
from tests.pipelines.cooccur_reference import (
    T0,
    reference_related,
    reference_scores,
    related_rows,
    scores_dict,
    write_jsonl,
    write_parquet_events,
)

DAY = 86_400_000


def random_log(seed: int, events: int, users: int = 30, notes: int = 40, days: int = 2):
    rnd = random.Random(seed)
    return [(f"user-{rnd.randrange(users)}", f"note-{rnd.randrange(notes):03d}", rnd.choice(["view", "click"]),
             T0 + rnd.randrange(days * DAY // 60_000) * 60_000) for _ in range(events)]


def write_partitioned(root, rows):
    """Hive layout by day, as the sample data generator writes it."""
    by_day: dict[int, list] = {}
    for row in rows:
        by_day.setdefault((row[3] - T0) // DAY, []).append(row)
    for day, day_rows in by_day.items():
        write_parquet_events(root / f"dt=2024-01-{day + 1:02d}" / "part-00000.parquet", day_rows)
    return root


def test_matches_independent_computation_on_unseen_log(tmp_path, beam_args):
    rows = random_log(seed=20240101, events=1500)
    events = write_partitioned(tmp_path / "events", rows)
    summary = run(["--events", str(events), "--out", str(tmp_path / "out"), "--window-seconds", "7200",
                   "--max-events-per-user", "40", "--shards", "5", *beam_args])
    expected = reference_scores(rows, 7200, cap=40)
    scores = read_table(tmp_path / "out" / "scores")
    assert validate(scores, "scores").ok
    assert scores_dict(scores) == expected  # exact: same floats, same user counts
    related = read_table(tmp_path / "out" / "related")
    assert validate(related, "related").ok
    assert related_rows(related) == reference_related(expected)
    counts = summary["counts"]
    assert counts["input"] == counts["valid"] == 1500 and counts["dead_lettered"] == 0
    assert counts["users"] == 30 and counts["capped_users"] == sum(
        1 for u in {r[0] for r in rows} if sum(r[0] == u for r in rows) > 40)
    assert counts["pairs"] == len(expected) and counts["related_rows"] == related.num_rows
    on_disk = json.loads((tmp_path / "out" / "_SUMMARY.json").read_text())
    assert on_disk["counts"] == counts


def test_date_selects_one_partition_and_dead_letters_are_counted(tmp_path, beam_args, capsys):
    events = tmp_path / "events"
    write_parquet_events(events / "dt=2024-01-01" / "part-0.parquet", [("u", "a", "view", T0), ("u", "b", "click", T0 + 1000)])
    write_jsonl(events / "dt=2024-01-02" / "part-0.jsonl", [
        {"user_id": "u", "note_id": "c", "action": "view", "ts": T0 + DAY},
        {"user_id": "u", "note_id": "d", "action": "click", "ts": T0 + DAY + 1000},
        {"user_id": "u", "note_id": "d", "action": "share", "ts": T0 + DAY},
        {"user_id": "u", "note_id": "d", "ts": T0 + DAY},
    ])
    out = tmp_path / "runs" / "2024-01-02"
    code = i2i_main(["cooccur", "--events", str(events), "--date", "2024-01-02", "--out", str(out), *beam_args])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 records (2 valid, 2 dead-lettered)" in printed and str(out / "scores") in printed
    assert scores_dict(read_table(out / "scores")) == {("c", "d"): (1.0, 1)}
    dead = read_table(out / "dead_letter")
    assert validate(dead, "dead_letter").ok
    assert sorted(dead.column("reason").to_pylist()) == ["missing field: action", "unknown action: 'share'"]
    summary = json.loads((out / "_SUMMARY.json").read_text())["counts"]
    assert summary["valid"] + summary["dead_lettered"] == summary["input"] == 4


def test_rerun_replaces_output_and_failed_run_keeps_previous(tmp_path, beam_args):
    events = tmp_path / "events"
    write_parquet_events(events / "part-0.parquet", [("u", "a", "view", T0), ("u", "b", "click", T0 + 1000)])
    out = tmp_path / "out"
    run(["--events", str(events), "--out", str(out), *beam_args])
    write_parquet_events(events / "part-1.parquet", [("v", "a", "view", T0), ("v", "c", "click", T0 + 1000)])
    run(["--events", str(events), "--out", str(out), *beam_args])
    assert set(scores_dict(read_table(out / "scores"))) == {("a", "b"), ("a", "c")}
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    (events / "part-2.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(InputError, match=r"events file .*part-2\.parquet is not readable Parquet"):
        run(["--events", str(events), "--out", str(out), *beam_args])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_results_do_not_depend_on_shards_layout_or_workers(tmp_path, beam_args):
    rows = random_log(seed=7, events=600, users=12, notes=15)
    one_file = write_parquet_events(tmp_path / "single.parquet", rows)
    partitioned = write_partitioned(tmp_path / "events", rows)
    run(["--events", str(one_file), "--out", str(tmp_path / "a"), "--shards", "1", *beam_args])
    run(["--events", str(partitioned / "dt=*" / "*.parquet"), "--out", str(tmp_path / "b"), "--shards", "7", *beam_args,
         "--direct_num_workers=2", "--direct_running_mode=multi_threading"])  # Beam options pass through
    for table in ("scores", "related"):
        a = read_table(tmp_path / "a" / table).sort_by([("src_note_id", "ascending"), ("dst_note_id", "ascending")])
        b = read_table(tmp_path / "b" / table).sort_by([("src_note_id", "ascending"), ("dst_note_id", "ascending")])
        assert a.equals(b)


@pytest.mark.parametrize("args, message", [
    (["--events", "{tmp}/nowhere"], "events not found"),
    (["--events", "{tmp}/events", "--date", "2024-1-2"], "--date must be YYYY-MM-DD"),
    (["--events", "{tmp}/events", "--date", "2024-02-01"], "events not found"),
    (["--events", "{tmp}/events", "--low", "5", "--up", "1"], "--low (5.0) is above --up (1.0)"),
    (["--events", "{tmp}/events", "--top-t", "0"], "must be a positive integer"),
    (["--events", "{tmp}/stray"], "unsupported events file type"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, beam_args, capsys, args, message):
    write_parquet_events(tmp_path / "events" / "dt=2024-01-01" / "part-0.parquet", [("u", "a", "view", T0)])
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.csv").write_text("x\n")
    argv = ["cooccur", *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "out"), *beam_args]
    assert i2i_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_empty_input_writes_readable_empty_tables(tmp_path, beam_args):
    write_jsonl(tmp_path / "events" / "part-0.jsonl", ["not json"])
    summary = run(["--events", str(tmp_path / "events"), "--out", str(tmp_path / "out"), *beam_args])
    for name in ("scores", "related", "dead_letter"):
        assert validate(read_table(tmp_path / "out" / name), name).ok
    assert read_table(tmp_path / "out" / "scores").num_rows == 0
    assert summary["counts"]["dead_lettered"] == 1
    with pytest.raises(InputError, match="the following arguments are required: --out"):
        run(["--events", str(tmp_path / "events"), *beam_args])


def test_killed_run_leaves_previous_output(tmp_path, beam_args):
    events = write_partitioned(tmp_path / "events", random_log(seed=3, events=20_000, users=200, notes=300))
    out = tmp_path / "out"
    run(["--events", str(events / "dt=2024-01-01"), "--out", str(out), *beam_args])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    job = subprocess.Popen([sys.executable, "-c", "import sys; from pipelines.cooccur import main; main(sys.argv[1:])",
                            "--events", str(events), "--out", str(out), *beam_args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".out.staging-") for p in tmp_path.iterdir()):
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_next_publish_removes_what_killed_runs_left(tmp_path, beam_args):
    events = write_partitioned(tmp_path / "events", random_log(seed=4, events=2_000, users=50, notes=80))
    out = tmp_path / "out"
    for leftover in (".out.staging-0123456789ab", ".out.old-0123456789ab"):
        (tmp_path / leftover / "scores").mkdir(parents=True)
        (tmp_path / leftover / "scores" / "part-0.parquet").write_bytes(b"partial")
    (tmp_path / ".other.staging-0123456789ab").mkdir()  # another output's: not ours to remove
    run(["--events", str(events), "--out", str(out), *beam_args])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.staging-0123456789ab", "events", "out"]


def test_fractional_window_seconds_on_the_command_line(tmp_path, beam_args):
    rows = [("u", "a", "view", T0), ("u", "b", "click", T0 + 2500), ("u", "c", "click", T0 + 2501),
            ("v", "a", "view", T0), ("v", "c", "click", T0 + 2000)]
    write_parquet_events(tmp_path / "events" / "part-0.parquet", rows)
    assert i2i_main(["cooccur", "--events", str(tmp_path / "events"), "--out", str(tmp_path / "out"),
                     "--window-seconds", "2.5", "--low", "0", *beam_args]) == 0
    scores = scores_dict(read_table(tmp_path / "out" / "scores"))
    assert scores == reference_scores(rows, 2.5)
    assert ("a", "b") in scores and scores[("a", "c")] == (1.0, 1)  # u's c is 2501 ms after a: v alone


def test_events_lost_by_a_runner_fail_the_job():
    check_event_counts({"valid": 10, "kept_events": 7, "capped_events": 3})
    with pytest.raises(RuntimeError, match="lost events between reading and pairing: 10 valid, but 6 kept"):
        check_event_counts({"valid": 10, "kept_events": 6, "capped_events": 3})
