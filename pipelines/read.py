"""Reading inputs in Beam: event files validated record by record, and Parquet tables as Arrow.

Elements are Arrow tables of up to ``batch_size`` rows, not single records, so the runner's
per-element cost is paid once per batch.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from i2i.records import Event, dead_letters_to_table, events_to_table, iter_parquet_records, parse_event
from i2i.schemas import EVENTS
from pipelines.paths import PARQUET_SUFFIXES

DEAD_LETTER = "dead_letter"
COUNTS = "counts"
EVENTS_TAG = "events"


def _jsonl_lines(handle) -> Iterator[str]:
    while True:
        line = handle.readline()
        if not line:
            return
        if line.strip():
            yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def _chunks(records: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ParseEventFile(beam.DoFn):
    """One event file (Parquet or JSON Lines) to batches of valid events and of dead letters.

    Every record goes through ``i2i.records.parse_event``, the one definition of a valid event.
    Outputs: main = events tables (EVENTS schema); ``dead_letter`` = (part name, DEAD_LETTER table);
    ``counts`` = (name, n) for input, valid and dead_lettered.
    """

    def __init__(self, batch_size: int = 65536) -> None:
        self.batch_size = batch_size

    def _batches(self, path: str) -> Iterator[tuple[list, pa.Table | None]]:
        """(records, the same rows as an Arrow table when it holds the events' exact values)."""
        with FileSystems.open(path) as handle:
            if path.endswith(PARQUET_SUFFIXES):
                parquet = pq.ParquetFile(handle)
                wanted = [name for name in EVENTS.names if name in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=self.batch_size, columns=wanted):
                    table = pa.Table.from_batches([batch])
                    yield list(iter_parquet_records(table)), table if _holds_exact_values(table) else None
            else:
                for records in _chunks(_jsonl_lines(handle), self.batch_size):
                    yield records, None

    def process(self, path: str):
        file_key = f"{zlib.crc32(path.encode('utf-8')):08x}"
        for index, (records, table) in enumerate(self._batches(path)):
            verdicts = [parse_event(record, path) for record in records]
            valid = [isinstance(v, Event) for v in verdicts]
            dead = [v for v, ok in zip(verdicts, valid) if not ok]
            yield beam.pvalue.TaggedOutput(COUNTS, ("input", len(records)))
            yield beam.pvalue.TaggedOutput(COUNTS, ("valid", len(records) - len(dead)))
            yield beam.pvalue.TaggedOutput(COUNTS, ("dead_lettered", len(dead)))
            if len(dead) < len(records):
                if table is not None:  # the valid rows as they are: no rebuild from Python objects
                    yield table.filter(pa.array(valid)).select(EVENTS.names).cast(EVENTS)
                else:
                    yield events_to_table([v for v, ok in zip(verdicts, valid) if ok])
            if dead:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, (f"{file_key}-{index:05d}", dead_letters_to_table(dead)))


def _holds_exact_values(table: pa.Table) -> bool:
    """True when the columns already carry what parse_event returns for a valid row: string ids
    and action, and a zone-aware timestamp (parse_event reads it as the same epoch milliseconds)."""
    if table.column_names != EVENTS.names and set(table.column_names) != set(EVENTS.names):
        return False
    strings = all(pa.types.is_string(table.schema.field(n).type) or pa.types.is_large_string(table.schema.field(n).type)
                  for n in ("user_id", "note_id", "action"))
    ts = table.schema.field("ts").type
    return strings and pa.types.is_timestamp(ts) and ts.tz is not None and ts.unit in ("s", "ms")


class ReadEvents(beam.PTransform):
    """File paths -> {events: Arrow tables, dead_letter: (part, table), counts: (name, n)}."""

    def __init__(self, files: list[str], batch_size: int = 65536) -> None:
        super().__init__()
        self.files = list(files)
        self.batch_size = batch_size

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.ParDo(ParseEventFile(self.batch_size)).with_outputs(DEAD_LETTER, COUNTS, main=EVENTS_TAG)
        )
        return {EVENTS_TAG: parsed[EVENTS_TAG], DEAD_LETTER: parsed[DEAD_LETTER], COUNTS: parsed[COUNTS]}


class ReadParquetFile(beam.DoFn):
    """One Parquet file to Arrow tables of the wanted columns."""

    def __init__(self, columns: list[str] | None = None, batch_size: int = 65536) -> None:
        self.columns = columns
        self.batch_size = batch_size

    def process(self, path: str):
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=self.batch_size, columns=self.columns):
                yield pa.Table.from_batches([batch])


class ReadParquetTable(beam.PTransform):
    """Parquet files of one table -> Arrow tables (``columns`` only)."""

    def __init__(self, files: list[str], columns: list[str] | None = None) -> None:
        super().__init__()
        self.files = list(files)
        self.columns = columns

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadParquetFile(self.columns))
        )
