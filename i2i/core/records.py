"""Parsing of single event records, shared by the local readers and the Beam pipelines.

A record that does not fit the events contract is never dropped silently: ``parse_event``
returns the reason, and callers route the raw record to a dead-letter table.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import pyarrow as pa

from i2i.core.schemas import ACTIONS, DEAD_LETTER, EVENTS

REQUIRED_EVENT_FIELDS = ("user_id", "note_id", "action", "ts")


@dataclass(frozen=True)
class Event:
    user_id: str
    note_id: str
    action: str
    ts_ms: int  # epoch milliseconds, UTC


@dataclass(frozen=True)
class DeadLetter:
    raw: str
    reason: str
    source: str = ""


# Times a table row can hold and read back: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z.
MIN_TS_MS, MAX_TS_MS = -62_135_596_800_000, 253_402_300_799_999


def parse_timestamp_ms(value: Any) -> int:
    """Epoch milliseconds from an int/float (epoch ms), an ISO-8601 string or a datetime, years 1 to 9999."""
    ms = _epoch_ms(value)
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ValueError(f"out of range (years 1 to 9999): {ms} ms")
    return ms


def _epoch_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean is not a time")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite time: {value}")
        return int(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"unsupported time type {type(value).__name__}")


def raw_text(record: Any) -> str:
    if isinstance(record, (bytes, bytearray)):
        return record.decode("utf-8", errors="replace")
    if isinstance(record, str):  # lone surrogates (from JSON escapes) as escapes, so Arrow can store them
        return record.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return json.dumps(record, default=str, sort_keys=True)


def parse_event(record: Any, source: str = "") -> Event | DeadLetter:
    """One raw record (dict, or a JSON line) to an Event, or a DeadLetter naming the problem."""
    if isinstance(record, (str, bytes, bytearray)):
        try:
            loaded = json.loads(record)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return DeadLetter(raw_text(record), f"invalid JSON: {exc.msg if hasattr(exc, 'msg') else exc}", source)
        if not isinstance(loaded, dict):
            return DeadLetter(raw_text(record), "record is not a JSON object", source)
        fields = loaded
    elif isinstance(record, dict):
        fields = record
    else:
        return DeadLetter(raw_text(record), f"record is a {type(record).__name__}, not an object", source)
    missing = [name for name in REQUIRED_EVENT_FIELDS if fields.get(name) is None]
    if missing:
        return DeadLetter(raw_text(record), f"missing field: {', '.join(missing)}", source)
    for name in ("user_id", "note_id"):
        if not isinstance(fields[name], str) or not fields[name].strip():
            return DeadLetter(raw_text(record), f"empty id: {name}", source)
        if not fields[name].isascii() and not _is_utf8(fields[name]):
            return DeadLetter(raw_text(record), f"id is not valid UTF-8 text: {name}", source)
    if fields["action"] not in ACTIONS:
        return DeadLetter(raw_text(record), f"unknown action: {fields['action']!r}", source)
    try:
        ts_ms = parse_timestamp_ms(fields["ts"])
    except (ValueError, OverflowError, TypeError) as exc:
        return DeadLetter(raw_text(record), f"unparsable time: {fields['ts']!r} ({exc})", source)
    return Event(fields["user_id"], fields["note_id"], fields["action"], ts_ms)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_events(records: Iterable[Any], source: str = "") -> tuple[list[Event], list[DeadLetter]]:
    good: list[Event] = []
    dead: list[DeadLetter] = []
    for record in records:
        parsed = parse_event(record, source)
        (good if isinstance(parsed, Event) else dead).append(parsed)
    return good, dead


def events_to_table(events: list[Event]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([e.user_id for e in events], pa.string()),
            "note_id": pa.array([e.note_id for e in events], pa.string()),
            "action": pa.array([e.action for e in events], pa.string()),
            "ts": pa.array([e.ts_ms for e in events], pa.int64()).cast(EVENTS.field("ts").type),
        },
        schema=EVENTS,
    )


def dead_letters_to_table(dead: list[DeadLetter]) -> pa.Table:
    return pa.table(
        {
            "raw": [d.raw for d in dead],
            "reason": [d.reason for d in dead],
            "source": [d.source for d in dead],
        },
        schema=DEAD_LETTER,
    )


def iter_jsonl(path: str) -> Iterator[str]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line.decode("utf-8", errors="replace").rstrip("\n")


def iter_parquet_records(table: pa.Table) -> Iterator[dict]:
    """Rows of an events table as dicts with ts in epoch ms, for the same per-record checks."""
    if "ts" in table.column_names and pa.types.is_timestamp(table.schema.field("ts").type):
        ts = table.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        table = table.set_column(table.column_names.index("ts"), "ts", ts)
    for batch in table.to_batches(max_chunksize=65536):
        yield from batch.to_pylist()
