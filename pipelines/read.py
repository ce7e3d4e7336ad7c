"""Reading inputs: event files validated by parse_event, and Parquet tables as Arrow.

One reader of event files serves the Beam jobs (``ReadEvents``) and local callers
(``read_events``, the oracle of the fuzz tests): the same file resolution (hidden and bookkeeping
paths skipped), the same decompression (``.gz`` through Beam's FileSystems) and the same line
splitting (LF or CRLF). Elements are Arrow tables of up to ``batch_size`` rows, not single
records, so the runner's per-element cost is paid once per batch.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from i2i.core.errors import InputError
from i2i.core.records import dead_letters_to_table, events_to_table, iter_parquet_records
from i2i.core.schemas import EVENTS
from pipelines.paths import PARQUET_SUFFIXES, resolve_event_files
from pipelines.validate import ValidatedBatch, ValueVerdicts, holds_exact_values, validate_records, validate_table

log = logging.getLogger(__name__)
DEAD_LETTER = "dead_letter"
COUNTS = "counts"
EVENTS_TAG = "events"


def _jsonl_lines(handle) -> Iterator[str]:
    """Non-blank lines, LF or CRLF ended, decoded (invalid UTF-8 replaced, so it dead-letters)."""
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


def event_batches(path: str, batch_size: int = 65536, per_record: bool = False,
                  verdicts: ValueVerdicts | None = None) -> Iterator[ValidatedBatch]:
    """One event file (Parquet, JSON Lines, gzipped JSON Lines) as validated batches."""
    verdicts = verdicts if verdicts is not None else ValueVerdicts()
    with FileSystems.open(path) as handle:  # decompresses by suffix (.gz)
        if path.endswith(PARQUET_SUFFIXES):
            try:
                parquet = pq.ParquetFile(handle)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"events file {path} is not readable Parquet: {exc}") from exc
            wanted = [name for name in EVENTS.names if name in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
                table = pa.Table.from_batches([batch])
                if holds_exact_values(table) and not per_record:
                    yield validate_table(table, path, verdicts)
                else:
                    yield validate_records(list(iter_parquet_records(table)), path)
        else:
            for records in _chunks(_jsonl_lines(handle), batch_size):
                yield validate_records(records, path)


def read_events(path: str | Path, per_record: bool = False) -> tuple[pa.Table, pa.Table]:
    """Reads events without Beam: (valid events, dead letters), every input record in exactly one.

    The files and their records are those ``ReadEvents`` reads for the same ``--events`` path.
    """
    good, dead = [events_to_table([])], [dead_letters_to_table([])]
    for file in resolve_event_files(str(path)):
        for batch in event_batches(file, per_record=per_record):
            good.append(batch.events)
            dead.append(dead_letters_to_table(batch.dead))
    return pa.concat_tables(good), pa.concat_tables(dead)


class ParseEventFile(beam.DoFn):
    """One event file (Parquet or JSON Lines) to batches of valid events and of dead letters.

    Validity is decided by ``i2i.core.records.parse_event`` (see ``pipelines.validate``): per record,
    or for typed Parquet batches per distinct value unless ``per_record`` is set.
    Outputs: main = events tables (EVENTS schema); ``dead_letter`` = (part name, DEAD_LETTER table);
    ``counts`` = (name, n) for input, valid and dead_lettered.
    """

    def __init__(self, batch_size: int = 65536, per_record: bool = False) -> None:
        self.batch_size = batch_size
        self.per_record = per_record
        self.verdicts: ValueVerdicts | None = None

    def setup(self) -> None:
        self.verdicts = ValueVerdicts()

    def process(self, path: str):
        file_key = f"{zlib.crc32(path.encode('utf-8')):08x}"
        rows = dead = 0
        for index, batch in enumerate(event_batches(path, self.batch_size, self.per_record, self.verdicts)):
            rows, dead = rows + batch.input_rows, dead + len(batch.dead)
            yield beam.pvalue.TaggedOutput(COUNTS, ("input", batch.input_rows))
            yield beam.pvalue.TaggedOutput(COUNTS, ("valid", batch.events.num_rows))
            yield beam.pvalue.TaggedOutput(COUNTS, ("dead_lettered", len(batch.dead)))
            if batch.events.num_rows:
                yield batch.events
            if batch.dead:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, (f"{file_key}-{index:05d}", dead_letters_to_table(batch.dead)))
        log.info("read %s: %d records, %d dead-lettered", path, rows, dead)


class ReadEvents(beam.PTransform):
    """File paths -> {events: Arrow tables, dead_letter: (part, table), counts: (name, n)}."""

    def __init__(self, files: list[str], batch_size: int = 65536, per_record: bool = False) -> None:
        super().__init__()
        self.files = list(files)
        self.batch_size = batch_size
        self.per_record = per_record

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "Files" >> beam.Create(self.files)  # Create reshuffles its elements itself
            | "Parse" >> beam.ParDo(ParseEventFile(self.batch_size, self.per_record)).with_outputs(DEAD_LETTER, COUNTS, main=EVENTS_TAG)
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
            | "Read" >> beam.ParDo(ReadParquetFile(self.columns))
        )
