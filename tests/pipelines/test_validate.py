"""Validation per distinct value gives exactly parse_event's per-record verdicts and reasons."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from i2i.core.records import iter_parquet_records
from pipelines.validate import ValueVerdicts, holds_exact_values, validate_records, validate_table

TS = pa.timestamp("ms", tz="UTC")
ids = st.one_of(st.none(), st.sampled_from(["u1", "n-7", "", "  ", "\t", "é", "\x1c", "a b", " x "]))
actions = st.one_of(st.none(), st.sampled_from(["view", "click", "VIEW", "", "like", " click"]))
timestamps = st.one_of(st.none(), st.integers(-10**12, 4 * 10**12))
rows = st.lists(st.tuples(ids, ids, actions, timestamps), max_size=40)


def table_of(batch) -> pa.Table:
    return pa.table({
        "user_id": pa.array([r[0] for r in batch], pa.string()),
        "note_id": pa.array([r[1] for r in batch], pa.string()),
        "action": pa.array([r[2] for r in batch], pa.string()),
        "ts": pa.array([r[3] for r in batch], pa.int64()).cast(TS),
    })


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(rows, min_size=1, max_size=3))
def test_per_value_validation_equals_per_record(batches):
    verdicts = ValueVerdicts()  # shared across batches, as in a worker
    for batch in batches:
        table = table_of(batch)
        assert holds_exact_values(table)
        fast = validate_table(table, "f.parquet", verdicts)
        strict = validate_records(list(iter_parquet_records(table)), "f.parquet")
        assert fast.events.equals(strict.events)
        assert [(d.raw, d.reason, d.source) for d in fast.dead] == [(d.raw, d.reason, d.source) for d in strict.dead]
        assert fast.input_rows == strict.input_rows == len(batch)


def test_untyped_columns_are_not_taken_as_exact():
    table = pa.table({"user_id": ["u"], "note_id": ["n"], "action": ["view"], "ts": ["2024-01-01T00:00:00Z"]})
    assert not holds_exact_values(table)
    assert not holds_exact_values(table_of([("u", "n", "view", 0)]).drop_columns(["action"]))
