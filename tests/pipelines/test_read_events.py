"""One events reader for Beam and for local callers: hidden paths, gzip and CRLF are read alike."""
from __future__ import annotations

import gzip
import json

from i2i.core.io import read_table
from pipelines.read import read_events

GOOD = {"user_id": "u1", "note_id": "a", "action": "click", "ts": 1_767_225_600_000}


def line(**fields) -> str:
    return json.dumps({**GOOD, **fields})


def write_events(root) -> None:
    """A day's partition as collectors leave it, with what a reader must skip or decode."""
    (root / "sub").mkdir(parents=True)
    (root / "plain.jsonl").write_text("\n".join([line(note_id="a"), line(note_id="b"), "not json"]) + "\n")
    with gzip.open(root / "sub" / "zipped.jsonl.gz", "wt") as handle:  # gzip: decoded, not skipped
        handle.write("\n".join([line(note_id="c"), line(action="buy")]) + "\n")
    (root / "crlf.jsonl").write_bytes((line(note_id="d") + "\r\n" + "{broken\r\n" + "\r\n").encode())
    for hidden in (".staging-1/x.jsonl", "_temporary/0/y.jsonl", "sub/.z.jsonl", "_SUCCESS"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_text(line(note_id="hidden") + "\n")


def test_beam_job_and_local_reader_read_the_same_records(tmp_path):
    from pipelines.cooccur import run

    events = tmp_path / "events"
    write_events(events)
    good, dead = read_events(events)
    # By hand: 4 valid events (a, b, c, d); 3 dead letters; nothing from hidden paths; no CR kept.
    assert sorted(good.column("note_id").to_pylist()) == ["a", "b", "c", "d"]
    assert sorted(dead.column("raw").to_pylist()) == sorted(["not json", "{broken", line(action="buy")])

    summary = run(["--events", str(events), "--out", str(tmp_path / "out"), "--runner=DirectRunner"])
    assert summary["counts"]["input"] == 7
    assert summary["counts"]["valid"] == good.num_rows
    beam_dead = read_table(tmp_path / "out" / "dead_letter")
    assert sorted(beam_dead.column("raw").to_pylist()) == sorted(dead.column("raw").to_pylist())
    assert sorted(beam_dead.column("reason").to_pylist()) == sorted(dead.column("reason").to_pylist())
