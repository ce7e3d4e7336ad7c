"""``i2i pairs``: notes join, symmetric duplicates, seeded splits and the test split."""
from __future__ import annotations

import datetime as dt
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from i2i.app.cli import main as i2i_main
from i2i.core.io import read_table
from i2i.core.schemas import NOTES, RELATED, validate
from pipelines.pair_table import SplitConfig, assign_splits, drop_symmetric, join_notes, notes_lookup, pair_fraction
from pipelines.pairs import AssignSplits, DropSymmetric, run
from pipelines.transforms import COUNTS

UTC = dt.timezone.utc


def related_table(rows):
    return pa.table({"src_note_id": [r[0] for r in rows], "dst_note_id": [r[1] for r in rows],
                     "score": [float(r[2]) for r in rows], "rank": pa.array([1] * len(rows), pa.int32())},
                    schema=RELATED)


def notes_table(published: dict[str, dt.datetime | None]):
    ids = list(published)
    return pa.table({"note_id": ids, "title": ids, "topics": [[] for _ in ids], "content": ids,
                     "image": pa.array([None] * len(ids), pa.binary()),
                     "published_at": pa.array(list(published.values()), pa.timestamp("ms", tz="UTC"))}, schema=NOTES)


OLD, NEW = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 2, 1, tzinfo=UTC)


def test_join_drops_and_counts_missing_notes():
    notes = notes_lookup(notes_table({"a": OLD, "b": OLD, "c": NEW}))
    candidates, dropped = join_notes(related_table([("a", "b", 1), ("a", "x", 1), ("y", "c", 1), ("c", "a", 1)]),
                                     notes, test_since_ms=int(NEW.timestamp() * 1000))
    assert dropped == 2
    assert candidates.select(["query_note_id", "target_note_id", "query_is_test", "target_is_test"]).to_pylist() == [
        {"query_note_id": "a", "target_note_id": "b", "query_is_test": False, "target_is_test": False},
        {"query_note_id": "c", "target_note_id": "a", "query_is_test": True, "target_is_test": False},
    ]


def test_symmetric_duplicate_keeps_higher_score_then_smaller_query():
    notes = notes_lookup(notes_table({n: OLD for n in "abcd"}))
    candidates, _ = join_notes(related_table([("b", "a", 2), ("a", "b", 1), ("c", "d", 1), ("d", "c", 1), ("a", "c", 1)]),
                               notes, None)
    kept, removed = drop_symmetric(candidates)
    assert removed == 2
    assert sorted((r["query_note_id"], r["target_note_id"], r["score"]) for r in kept.to_pylist()) == [
        ("a", "c", 1.0), ("b", "a", 2.0), ("c", "d", 1.0)]


def test_splits_are_seeded_deterministic_and_orientation_free():
    assert pair_fraction("a", "b", 1) == pair_fraction("a", "b", 1) != pair_fraction("a", "b", 2)
    notes = notes_lookup(notes_table({f"n{i:03d}": OLD for i in range(200)}))
    rows = [(f"n{i:03d}", f"n{i + 1:03d}", 1) for i in range(199)]
    forward, _ = join_notes(related_table(rows), notes, None)
    backward, _ = join_notes(related_table([(b, a, s) for a, b, s in rows]), notes, None)
    config = SplitConfig(val_fraction=0.25, seed=3)
    split_forward = assign_splits(forward, config)[0].column("split").to_pylist()
    split_backward = assign_splits(backward, config)[0].column("split").to_pylist()
    assert split_forward == split_backward
    assert 25 <= split_forward.count("val") <= 75  # about a quarter of 199
    other_seed = assign_splits(forward, SplitConfig(val_fraction=0.25, seed=4))[0].column("split").to_pylist()
    assert other_seed != split_forward
    assert set(assign_splits(forward, SplitConfig(val_fraction=0.0))[0].column("split").to_pylist()) == {"train"}


def test_test_split_keeps_test_notes_out_of_train_and_val():
    notes = notes_lookup(notes_table({"a": OLD, "b": OLD, "c": NEW, "d": NEW, "e": None}))
    candidates, _ = join_notes(related_table([("a", "b", 1), ("c", "d", 1), ("a", "c", 1), ("d", "b", 1), ("e", "a", 1)]),
                               notes, test_since_ms=int(NEW.timestamp() * 1000))
    pairs, counts = assign_splits(candidates, SplitConfig(val_fraction=0.0))
    assert sorted((r["query_note_id"], r["target_note_id"], r["split"]) for r in pairs.to_pylist()) == [
        ("a", "b", "train"), ("c", "d", "test"), ("e", "a", "train")]
    assert counts == {"train": 2, "val": 0, "test": 1, "mixed_dropped": 2}


def test_dedup_and_split_transforms_in_beam(beam_args):
    notes = notes_lookup(notes_table({n: OLD for n in "abcdef"}))
    first, _ = join_notes(related_table([("a", "b", 1), ("c", "d", 3)]), notes, None)
    second, _ = join_notes(related_table([("b", "a", 1), ("d", "c", 2), ("e", "f", 1)]), notes, None)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        deduped = p | beam.Create([first, second]) | DropSymmetric(shards=4)
        split = deduped["pairs"] | AssignSplits(SplitConfig(val_fraction=0.0))
        rows = split["pairs"] | beam.FlatMap(lambda kv: [tuple(r.values()) for r in kv[1].to_pylist()])
        assert_that(rows, equal_to([("a", "b", 1.0, "train"), ("c", "d", 3.0, "train"), ("e", "f", 1.0, "train")]))
        counts = (deduped[COUNTS], split[COUNTS]) | beam.Flatten() | beam.CombinePerKey(sum)
        assert_that(counts, equal_to([("symmetric_dropped", 2), ("train", 3), ("val", 0), ("test", 0),
                                      ("mixed_dropped", 0)]), label="counts")


def write_inputs(tmp_path):
    related_dir = tmp_path / "run" / "related"
    related_dir.mkdir(parents=True)
    pq.write_table(related_table([("a", "b", 2), ("b", "a", 1), ("c", "d", 1), ("a", "c", 1), ("a", "zz", 1)]),
                   related_dir / "part-00000.parquet")
    (tmp_path / "run" / "_SUMMARY.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    pq.write_table(notes_table({"a": OLD, "b": OLD}), tmp_path / "notes" / "part-0.parquet")
    pq.write_table(notes_table({"c": NEW, "d": NEW}), tmp_path / "notes" / "part-1.parquet")


def test_cli_end_to_end_from_a_cooccur_run(tmp_path, beam_args, capsys):
    write_inputs(tmp_path)
    out = tmp_path / "pairs"
    argv = ["pairs", "--related", str(tmp_path / "run"), "--notes", str(tmp_path / "notes"), "--out", str(out),
            "--test-since", "2024-02-01T00:00:00Z", "--val-fraction", "0", *beam_args]
    assert i2i_main(argv) == 0
    assert "5 related rows -> 2 pairs (train 1, val 0, test 1)" in capsys.readouterr().out
    pairs = read_table(out)
    assert validate(pairs, "pairs").ok
    assert sorted((r["query_note_id"], r["target_note_id"], r["split"]) for r in pairs.to_pylist()) == [
        ("a", "b", "train"), ("c", "d", "test")]
    counts = json.loads((out / "_SUMMARY.json").read_text())["counts"]
    assert counts == {"related_rows": 5, "missing_note_dropped": 1, "symmetric_dropped": 1, "mixed_dropped": 1,
                      "pairs": 2, "train": 1, "val": 0, "test": 1}
    first = pairs.sort_by("query_note_id")
    run(argv[1:])  # a rerun gives the same table
    assert read_table(out).sort_by("query_note_id").equals(first)


@pytest.mark.parametrize("extra, message", [
    (["--test-since", "last tuesday"], "--test-since: cannot read"),
    (["--val-fraction", "1.5"], "must be between 0 and 1"),
])
def test_cli_bad_input(tmp_path, beam_args, capsys, extra, message):
    write_inputs(tmp_path)
    argv = ["pairs", "--related", str(tmp_path / "run"), "--notes", str(tmp_path / "notes"),
            "--out", str(tmp_path / "pairs"), *extra, *beam_args]
    assert i2i_main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_related_without_columns(tmp_path, beam_args, capsys):
    write_inputs(tmp_path)
    pq.write_table(pa.table({"src_note_id": ["a"]}), tmp_path / "bad.parquet")
    argv = ["pairs", "--related", str(tmp_path / "bad.parquet"), "--notes", str(tmp_path / "notes"),
            "--out", str(tmp_path / "pairs"), *beam_args]
    assert i2i_main(argv) == 2
    assert "lacks column(s): dst_note_id, score" in capsys.readouterr().err
