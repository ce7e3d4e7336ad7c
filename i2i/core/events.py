"""Local (non-Beam) reader of an events table: Parquet or JSON Lines, with dead letters."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from i2i.core.errors import InputError
from i2i.core.io import read_table
from i2i.core.records import dead_letters_to_table, events_to_table, iter_jsonl, iter_parquet_records, split_events


def event_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"events not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise InputError(f"no event files under {path}")
    return files


def read_events(path: str | Path) -> tuple[pa.Table, pa.Table]:
    """Returns (valid events, dead letters); every input record lands in exactly one of them."""
    good_tables, dead_tables = [], []
    for file in event_files(path):
        if file.suffix in (".jsonl", ".json", ".ndjson"):
            records = iter_jsonl(str(file))
        elif file.suffix == ".parquet":
            records = iter_parquet_records(read_table(file))
        else:
            raise InputError(f"unsupported events file type: {file} (expected .parquet or .jsonl)")
        good, dead = split_events(records, source=str(file))
        good_tables.append(events_to_table(good))
        dead_tables.append(dead_letters_to_table(dead))
    return pa.concat_tables(good_tables), pa.concat_tables(dead_tables)
