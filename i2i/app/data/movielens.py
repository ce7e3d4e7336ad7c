"""MovieLens-100k as notes and events: movies are notes (no image), ratings are events.

A rating of 4 or more is a click, a lower rating a view; timestamps come from the data. The data
ship inside the ``recbole`` wheel (installed with --no-deps), so no download is needed.
"""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from i2i.core.errors import InputError
from i2i.core.schemas import EVENTS, NOTES

CLICK_RATING = 4.0


def default_dir() -> Path:
    try:
        import recbole
    except ModuleNotFoundError as exc:
        raise InputError("MovieLens-100k needs the recbole wheel: pip install --no-deps recbole==1.2.1") from exc
    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


@dataclass
class MovieLens:
    notes: pa.Table
    events: pa.Table


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise InputError(f"MovieLens file not found: {path}")
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.split(":")[0] for name in next(reader)]
        return [dict(zip(header, row)) for row in reader]


def load(directory: Path | None = None) -> MovieLens:
    directory = directory or default_dir()
    items = _rows(directory / "ml-100k.item")
    inter = _rows(directory / "ml-100k.inter")
    notes = pa.table(
        {
            "note_id": [f"m{row['item_id']}" for row in items],
            "title": [row["movie_title"] for row in items],
            "topics": [row["class"].split() for row in items],
            "content": [f"Released in {row['release_year']}." if row["release_year"] else "" for row in items],
            "image": pa.nulls(len(items), pa.binary()),
            "published_at": [_release_time(row["release_year"]) for row in items],
        },
        schema=NOTES,
    )
    events = pa.table(
        {
            "user_id": [f"u{row['user_id']}" for row in inter],
            "note_id": [f"m{row['item_id']}" for row in inter],
            "action": ["click" if float(row["rating"]) >= CLICK_RATING else "view" for row in inter],
            "ts": pa.array([int(float(row["timestamp"])) * 1000 for row in inter], pa.int64()).cast(
                EVENTS.field("ts").type),
        },
        schema=EVENTS,
    )
    return MovieLens(notes, events)


def _release_time(year: str) -> dt.datetime | None:
    return dt.datetime(int(year), 1, 1, tzinfo=dt.timezone.utc) if year.isdigit() else None
