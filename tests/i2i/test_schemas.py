import datetime as dt

import pyarrow as pa
import pytest

from i2i.core.errors import InputError
from i2i.core.schemas import EVENTS, NOTES, conform, embeddings_schema, validate

UTC = dt.timezone.utc


def events(**columns):
    base = {
        "user_id": ["u1", "u2"],
        "note_id": ["a", "b"],
        "action": ["view", "click"],
        "ts": [dt.datetime(2026, 1, 1, tzinfo=UTC)] * 2,
    }
    base.update(columns)
    return pa.table(base)


def test_valid_events_conform_and_cast_to_contract_types():
    table = conform(events(), "events")
    assert table.schema.equals(EVENTS)
    assert validate(table, "events").ok


def test_report_names_field_rows_and_reason():
    report = validate(events(action=["view", "like"], user_id=["u1", " "]), "events")
    assert not report.ok
    text = str(report)
    assert "action: value not in ['view', 'click'] at rows [1]" in text
    assert "user_id: empty id at rows [1]" in text


def test_missing_column_and_wrong_type_reported():
    table = events().drop_columns(["ts"]).append_column("ts", pa.array([1, 2]))
    assert "ts: type int64" in str(validate(table, "events"))
    assert "note_id: missing column" in str(validate(events().drop_columns(["note_id"]), "events"))


def test_naive_timestamps_are_refused():
    table = events(ts=pa.array([dt.datetime(2026, 1, 1)] * 2, pa.timestamp("ms")))
    assert "ts: type timestamp[ms]" in str(validate(table, "events"))


def test_duplicate_note_ids_refused():
    notes = pa.table({
        "note_id": ["a", "b", "a"], "title": ["x"] * 3, "topics": [["t"]] * 3, "content": [""] * 3,
        "image": pa.nulls(3, pa.binary()), "published_at": [dt.datetime(2026, 1, 1, tzinfo=UTC)] * 3,
    })
    report = validate(notes, "notes")
    assert "note_id: duplicate id at rows [0, 2]" in str(report)
    with pytest.raises(InputError, match="duplicate id"):
        conform(notes, "notes")
    assert validate(notes.slice(0, 2), "notes").ok
    assert conform(notes.slice(0, 2), "notes").schema.equals(NOTES)


def test_embedding_dimension_checked():
    table = pa.table({
        "note_id": ["a"], "embedding": pa.array([[0.0] * 4], pa.list_(pa.float32(), 4)),
        "model_version": ["m"], "embedded_at": [dt.datetime(2026, 1, 1, tzinfo=UTC)],
    })
    assert validate(table, "embeddings", embeddings_schema(4)).ok
    assert "embedding: type" in str(validate(table, "embeddings", embeddings_schema(8)))


def test_empty_tables_validate():
    empty = EVENTS.empty_table()
    assert validate(empty, "events").ok
    assert validate(pa.Table.from_batches([], EVENTS), "events").ok
    assert conform(empty, "events").num_rows == 0
