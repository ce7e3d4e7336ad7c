"""Validation of event batches with ``i2i.core.records.parse_event`` as the only definition of validity.

Two ways to ask it:

- per record: ``parse_event`` on every record (JSON Lines, loosely typed Parquet, or on request);
- per distinct value, for typed Parquet batches (string ids and action, a timestamp column):
  ``parse_event``'s checks each look at one field, so a row is valid when each of its values
  passes ``parse_event`` inside an otherwise valid probe record. That asks ``parse_event`` once
  per distinct user, note and action instead of once per row. Every row that a probe does not
  clear is then parsed on its own, so dead letters carry ``parse_event``'s own reason, and if
  the probe record itself is not valid the batch falls back to per-record parsing.
  ``tests/pipelines/test_validate.py`` checks both ways agree on generated records.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from i2i.core.records import DeadLetter, Event, events_to_table, iter_parquet_records, parse_event
from i2i.core.schemas import EVENTS

PROBE = {"user_id": "probe-user", "note_id": "probe-note", "action": "view", "ts": 0}
ID_COLUMNS = ("user_id", "note_id", "action")


@dataclass
class ValidatedBatch:
    events: pa.Table  # EVENTS schema
    dead: list[DeadLetter]
    input_rows: int


def holds_exact_values(table: pa.Table) -> bool:
    """True when the columns already carry what parse_event returns for a valid row: string ids
    and action, and a zone-aware timestamp (parse_event reads it as the same epoch milliseconds)."""
    if set(table.column_names) != set(EVENTS.names):
        return False
    strings = all(pa.types.is_string(table.schema.field(n).type) or pa.types.is_large_string(table.schema.field(n).type)
                  for n in ID_COLUMNS)
    ts = table.schema.field("ts").type
    return strings and pa.types.is_timestamp(ts) and ts.tz is not None and ts.unit in ("s", "ms")


def validate_records(records: list, source: str) -> ValidatedBatch:
    verdicts = [parse_event(record, source) for record in records]
    good = [v for v in verdicts if isinstance(v, Event)]
    dead = [v for v in verdicts if not isinstance(v, Event)]
    return ValidatedBatch(events_to_table(good), dead, len(records))


class ValueVerdicts:
    """parse_event's verdict on single field values, remembered across batches (bounded).

    Values already known to pass are matched in bulk with Arrow's ``is_in``; only values not
    seen before are probed one by one.
    """

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self.max_entries = max_entries
        self.good: dict[str, pa.Array] = {}
        self.bad: dict[str, set] = {}

    def passes(self, field: str, value) -> bool:
        return isinstance(parse_event({**PROBE, field: value}), Event)

    def column_ok(self, column: pa.ChunkedArray | pa.Array, field: str) -> np.ndarray:
        """Per row: the value passes parse_event's check of ``field`` (nulls do not)."""
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        values = encoded.dictionary
        good = self.good.get(field, pa.array([], values.type))
        verdict = pc.is_in(values, value_set=good).to_numpy(zero_copy_only=False).copy()
        unknown = np.flatnonzero(~verdict)
        if len(unknown):
            bad = self.bad.setdefault(field, set())
            new_good = []
            for i, value in zip(unknown, values.take(pa.array(unknown)).to_pylist()):
                if value in bad:
                    continue
                if self.passes(field, value):
                    verdict[i] = True
                    new_good.append(value)
                else:
                    bad.add(value)
            if new_good:
                good = pa.concat_arrays([good, pa.array(new_good, values.type)])
                self.good[field] = good if len(good) <= self.max_entries else pa.array(new_good, values.type)
        indices = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)
        return np.append(verdict, False)[indices]


def validate_table(table: pa.Table, source: str, verdicts: ValueVerdicts | None = None) -> ValidatedBatch:
    """A typed Parquet batch (``holds_exact_values``) validated per distinct value, then per record
    for every row not cleared."""
    verdicts = verdicts if verdicts is not None else ValueVerdicts()
    if not isinstance(parse_event(PROBE), Event):
        return validate_records(list(iter_parquet_records(table)), source)
    ok = np.ones(table.num_rows, dtype=bool)
    for field in ID_COLUMNS:
        ok &= verdicts.column_ok(table.column(field), field)
    ts_ms = table.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    ok &= pc.is_valid(ts_ms).to_numpy(zero_copy_only=False)
    if ok.any():
        bounds = pc.min_max(ts_ms.filter(pa.array(ok)))
        if not all(verdicts.passes("ts", bounds[end].as_py()) for end in ("min", "max")):
            return validate_records(list(iter_parquet_records(table)), source)
    doubtful = np.flatnonzero(~ok)
    dead: list[DeadLetter] = []
    if len(doubtful):
        rows = table.take(pa.array(doubtful))
        for row, record in zip(doubtful, iter_parquet_records(rows)):
            verdict = parse_event(record, source)
            if isinstance(verdict, Event):
                ok[row] = True  # the record's own verdict always wins
            else:
                dead.append(verdict)
    events = table.filter(pa.array(ok)).select(EVENTS.names).cast(EVENTS)
    return ValidatedBatch(events, dead, table.num_rows)
