"""Each composite transform of the co-occurrence job on its own, in a real Beam pipeline."""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from i2i.core.io import read_table
from i2i.core.schemas import SCORES, validate
from pipelines.read import COUNTS, DEAD_LETTER, EVENTS_TAG, ReadEvents
from pipelines.transforms import CombineScores, CooccurConfig, SelectRelated, UserPairPartials, WriteCounts, WriteTable
from tests.pipelines.cooccur_reference import T0, events_table, reference_scores, write_jsonl, write_parquet_events

S = 1000


def pipeline(beam_args):
    return beam.Pipeline(options=PipelineOptions(beam_args))


def rows_of(tables):
    """Arrow tables -> plain rows, so assert_that can compare them."""
    return tables | beam.FlatMap(lambda table: [tuple(r.values()) for r in table.to_pylist()])


def sum_counts(counts):
    return counts | beam.CombinePerKey(sum)


def test_read_events_splits_valid_and_dead_letters(tmp_path, beam_args):
    parquet = write_parquet_events(tmp_path / "dt=2024-01-01" / "part-0.parquet",
                                   [("u1", "a", "view", T0), ("u1", "b", "click", T0 + S)])
    jsonl = write_jsonl(tmp_path / "dt=2024-01-02" / "part-0.jsonl", [
        {"user_id": "u2", "note_id": "c", "action": "click", "ts": "2024-01-02T00:00:00Z"},
        {"user_id": "u2", "note_id": "d", "action": "like", "ts": T0},
        {"user_id": "", "note_id": "d", "action": "view", "ts": T0},
        "{broken",
    ])
    with pipeline(beam_args) as p:
        read = p | ReadEvents([str(parquet), str(jsonl)], batch_size=2)
        assert_that(rows_of(read[EVENTS_TAG]), equal_to([
            ("u1", "a", "view", pa.scalar(T0, pa.timestamp("ms", tz="UTC")).as_py()),
            ("u1", "b", "click", pa.scalar(T0 + S, pa.timestamp("ms", tz="UTC")).as_py()),
            ("u2", "c", "click", pa.scalar(T0 + 86_400_000, pa.timestamp("ms", tz="UTC")).as_py()),
        ]), label="events")
        reasons = read[DEAD_LETTER] | beam.FlatMap(lambda kv: kv[1].column("reason").to_pylist())
        assert_that(reasons, equal_to(["unknown action: 'like'", "empty id: user_id",
                                       "invalid JSON: Expecting property name enclosed in double quotes"]),
                    label="reasons")
        assert_that(sum_counts(read[COUNTS]), equal_to([("input", 6), ("valid", 3), ("dead_lettered", 3)]),
                    label="counts")


def test_user_pairs_and_scores_across_tables(beam_args):
    # One user's events arrive split over two tables; the transform must bring them together.
    rows = [("u1", "a", "view", 0), ("u2", "a", "click", 0), ("u2", "b", "click", S)]
    late = [("u1", "b", "click", S), ("u1", "c", "click", 90_000 * S)]
    config = CooccurConfig(window_seconds=60, shards=3)
    with pipeline(beam_args) as p:
        tables = p | beam.Create([events_table(rows), events_table(late)])
        pairs = tables | UserPairPartials(config)
        scores = pairs["partials"] | CombineScores()
        assert_that(rows_of(scores | beam.Values()), equal_to([("a", "b", 1.0, 2)]), label="scores")
        assert_that(sum_counts(pairs[COUNTS]), equal_to(
            [("users", 2), ("capped_users", 0), ("kept_events", 5), ("capped_events", 0), ("user_pairs", 2)]), label="counts")
    assert reference_scores(rows + late, 60) == {("a", "b"): (1 / 2 + 1 / 2, 2)}


def test_select_related_bounds_and_ties(beam_args):
    scores = pa.table({"src_note_id": ["a", "a", "a", "b"], "dst_note_id": ["c", "b", "d", "a"],
                       "score": [0.5, 0.5, 0.001, 2.0], "users": [1, 1, 1, 4]}, schema=SCORES)
    with pipeline(beam_args) as p:
        related = p | beam.Create([(0, scores)]) | SelectRelated(up=1.5, low=0.01, top_t=1)
        assert_that(rows_of(related | beam.Values()), equal_to([("a", "b", 0.5, 1)]))


def test_write_table_and_counts(tmp_path, beam_args):
    scores = pa.table({"src_note_id": ["a"], "dst_note_id": ["b"], "score": [0.5], "users": [1]}, schema=SCORES)
    with pipeline(beam_args) as p:
        written = p | beam.Create([(0, scores), (7, scores)]) | WriteTable(str(tmp_path / "scores"), SCORES, "pairs")
        written | WriteCounts(str(tmp_path / "counts.json"))
    assert sorted(f.name for f in (tmp_path / "scores").iterdir()) == ["part-00000.parquet", "part-00007.parquet"]
    table = read_table(tmp_path / "scores")
    assert validate(table, "scores").ok and table.num_rows == 2
    assert (tmp_path / "counts.json").read_text() == '{"pairs": 2}'
