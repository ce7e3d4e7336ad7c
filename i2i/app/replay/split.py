"""The time split of a replay: everything known before day D, and what day D brings.

Notes published before D's midnight (UTC) are the catalogue of day D-1; notes published on day D
arrive that day; later notes do not exist yet. Events before D train and feed the day D-1 system;
day D's clicks are what the replayed users are scored against.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from i2i.app.replay.scoring import UserCase
from i2i.core.errors import InputError
from i2i.core.io import read_table
from i2i.core.schemas import TABLES, validate

SPLIT_COLUMNS = {"notes": ("note_id", "published_at"), "events": ("user_id", "note_id", "action", "ts")}


@dataclass
class DaySplit:
    day: dt.date
    notes_before: pa.Table  # the catalogue of day D-1
    new_notes: pa.Table  # published on day D
    events_before: pa.Table
    day_events: pa.Table
    deleted: list[str]  # notes of the day D-1 catalogue removed on day D

    @property
    def new_ids(self) -> set[str]:
        return set(self.new_notes.column("note_id").to_pylist())

    def catalogue(self) -> list[str]:
        """Note ids that can be recalled on day D: old and new notes, less the deleted ones."""
        deleted = set(self.deleted)
        ids = self.notes_before.column("note_id").to_pylist() + self.new_notes.column("note_id").to_pylist()
        return [note_id for note_id in ids if note_id not in deleted]


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _between(column: pa.ChunkedArray, start: dt.datetime | None, end: dt.datetime) -> pa.ChunkedArray:
    below = pc.less(column, pa.scalar(end, column.type))
    if start is None:
        return pc.fill_null(below, False)
    return pc.fill_null(pc.and_(pc.greater_equal(column, pa.scalar(start, column.type)), below), False)


def read_deletes(path: str | Path | None) -> list[str]:
    """Note ids to delete: a Parquet table with a note_id column or a text file of one id a line."""
    if not path:
        return []
    path = Path(path)
    if not path.exists():
        raise InputError(f"deletes not found: {path}")
    if path.is_file() and path.suffix != ".parquet":
        return sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    table = read_table(path)
    if "note_id" not in table.column_names:
        raise InputError(f"deletes table {path} has no note_id column")
    return sorted(set(table.column("note_id").drop_null().to_pylist()))


def split_day(notes: pa.Table, events: pa.Table, day: dt.date, deleted: Sequence[str] = (), span: int = 1) -> DaySplit:
    """Splits notes and events at day D; refuses a day without clicks or without earlier events.

    ``span`` > 1 makes "day D" the ``span`` days from D on (for sparse data such as MovieLens,
    where one day holds a handful of users): they are replayed as one day."""
    if span < 1:
        raise InputError(f"the replayed span must be at least one day, got {span}")
    start, end = midnight(day), midnight(day + dt.timedelta(days=span))
    published = notes.column("published_at")
    notes_before = notes.filter(_between(published, None, start))
    new_notes = notes.filter(_between(published, start, end))
    events_before = events.filter(_between(events.column("ts"), None, start))
    day_events = events.filter(_between(events.column("ts"), start, end))
    if events_before.num_rows == 0:
        raise InputError(f"no events before {day}: nothing to build the day-before system from")
    if pc.sum(pc.equal(day_events.column("action"), "click")).as_py() in (None, 0):
        raise InputError(f"no clicks on {day}: nothing to score a replay of that day against")
    known = set(notes_before.column("note_id").to_pylist())
    unknown = sorted(set(deleted) - known)
    if unknown:
        raise InputError(f"{len(unknown)} deleted notes are not in the catalogue before {day}, e.g. {unknown[:3]}")
    return DaySplit(day, notes_before, new_notes, events_before, day_events, sorted(set(deleted)))


def click_histories(events: pa.Table, length: int) -> dict[str, list[str]]:
    """Each user's latest distinct clicked notes, most recent first (at most ``length``)."""
    clicks = events.filter(pc.equal(events.column("action"), "click")).sort_by([("ts", "descending")])
    histories: dict[str, list[str]] = {}
    for user, note in zip(clicks.column("user_id").to_pylist(), clicks.column("note_id").to_pylist()):
        history = histories.setdefault(user, [])
        if len(history) < length and note not in history:
            history.append(note)
    return histories


@dataclass
class CaseCounts:
    """How day D's users turned into scored cases (reported beside the table)."""

    active_users: int = 0  # users with a click on day D
    no_history: int = 0  # clicked on day D but never before: nothing to send
    only_reclicks: int = 0  # every day D click was on a history note or a deleted note
    scored: int = 0
    reclicks: int = 0  # day D clicks on history notes, left out of the targets
    deleted_clicks: int = 0  # day D clicks on deleted notes, left out of the targets


def user_cases(split: DaySplit, history_length: int = 20) -> tuple[list[UserCase], CaseCounts]:
    """One case per user with a click on day D and a click history before it."""
    histories = click_histories(split.events_before, history_length)
    clicks = split.day_events.filter(pc.equal(split.day_events.column("action"), "click"))
    day_clicks: dict[str, set[str]] = {}
    for user, note in zip(clicks.column("user_id").to_pylist(), clicks.column("note_id").to_pylist()):
        day_clicks.setdefault(user, set()).add(note)
    new_ids, deleted = split.new_ids, set(split.deleted)
    cases, counts = [], CaseCounts(active_users=len(day_clicks))
    for user in sorted(day_clicks):
        history = histories.get(user)
        if not history:
            counts.no_history += 1
            continue
        clicked = day_clicks[user]
        reclicks, removed = clicked & set(history), clicked & deleted
        counts.reclicks += len(reclicks)
        counts.deleted_clicks += len(removed - reclicks)
        targets = clicked - reclicks - removed
        if not targets:
            counts.only_reclicks += 1
            continue
        cases.append(UserCase(user, history, targets, targets & new_ids))
    counts.scored = len(cases)
    return cases, counts


def load_split(data: Path, day: dt.date, deletes: str | None = None, delete_random: int = 0,
               seed: int = 0, span: int = 1) -> DaySplit:
    """Reads ``DATA/notes`` and ``DATA/events`` (as ``i2i data`` writes them) and splits them at ``day``;
    ``delete_random`` more notes of the day D-1 catalogue are deleted on day D (seeded)."""
    for name in ("notes", "events"):
        if not (data / name).exists():
            raise InputError(f"{data} has no {name} table (expected {data / name}, as i2i data writes it)")
    if delete_random < 0:
        raise InputError(f"--delete-random must not be negative, got {delete_random}")
    notes, events = (checked_table(data / name, name) for name in ("notes", "events"))
    deleted = set(read_deletes(deletes))
    if delete_random:
        published = notes.column("published_at")
        before = notes.filter(_between(published, None, midnight(day))).column("note_id").to_pylist()
        candidates = sorted(set(before) - deleted)
        if delete_random > len(candidates):
            raise InputError(f"--delete-random {delete_random}: only {len(candidates)} notes before {day}")
        deleted |= set(random.Random(seed).sample(candidates, delete_random))
    return split_day(notes, events, day, sorted(deleted), span)


def checked_table(path: Path, name: str) -> pa.Table:
    """The table at ``path``, after checking the columns the split reads against the contract's
    ``name`` schema (the stages check the rest of theirs); InputError naming what does not fit."""
    table = read_table(path)
    contract = TABLES[name]
    report = validate(table, name, pa.schema([contract.field(column) for column in SPLIT_COLUMNS[name]]))
    if not report.ok:
        raise InputError(f"{path} does not fit the {name} contract: {report}")
    return table
