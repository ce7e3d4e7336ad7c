"""The embedding job as a Beam pipeline: ``RunInference`` with a model handler around the encoder.

On one machine it runs with the DirectRunner; a distributed runner with GPU workers runs the same
graph, each worker loading the checkpoint once and writing its bundles straight to the table:

    ReadFromParquet(notes) -> validate, skip notes already embedded (bad rows -> dead letters)
      -> group by note_id (one note per id; repeats -> dead letters)
      -> RunInference(NoteEncoderModelHandler)  (length-sorted sub-batches, bf16 on CUDA)
      -> WriteEmbeddings (put_many per chunk or bundle; failed notes -> dead letters)

Counts come back through Beam metrics and fill the same summary as the local job.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from embedding.embed_job import ChunkEmbedder, EmbedJobConfig, EmbedJobSummary, dead_letter_row, open_notes
from embedding.table import open_table
from i2i.core.beam import beam_options
from i2i.core.io import write_table
from i2i.core.schemas import DEAD_LETTER

NAMESPACE = "i2i_embed"
DEAD = "dead"


class NoteEncoderModelHandler(ModelHandler[dict, PredictionResult, Any]):
    """Loads the checkpoint's ``NoteEncoder`` once per worker and embeds batches of note dicts.

    Each ``PredictionResult`` has the note id as ``example`` and either its float32 vector or,
    when the model failed on that note, the reason (a str) as ``inference``.
    """

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int = 32,
                 max_batch_size: int = 256) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size
        self.max_batch_size = max(max_batch_size, batch_size)
        self._images_failed = Metrics.counter(NAMESPACE, "images_failed")

    def load_model(self):
        from embedding.checkpoint import load_encoder

        return load_encoder(self.checkpoint, device=self.device)

    def run_inference(self, batch: Sequence[dict], model, inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        before = model.image_failures
        ids, matrix, failed = ChunkEmbedder(model, self.batch_size)(list(batch))
        self._images_failed.inc(model.image_failures - before)
        for note_id, vector in zip(ids, matrix):
            yield PredictionResult(note_id, vector)
        for note, reason in failed:
            yield PredictionResult(note["note_id"], reason)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # Large batches let the handler sort by length before cutting forward-pass batches.
        return {"min_batch_size": min(self.batch_size, self.max_batch_size), "max_batch_size": self.max_batch_size}

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def share_model_across_processes(self) -> bool:
        return False


class ValidateNotes(beam.DoFn):
    """Keys valid notes by id; skips those already embedded; bad rows go to the dead-letter output."""

    def __init__(self, done: frozenset[str], source: str) -> None:
        self.done = done
        self.source = source
        self.read = Metrics.counter(NAMESPACE, "notes_read")
        self.present = Metrics.counter(NAMESPACE, "already_embedded")

    def process(self, note: dict):
        self.read.inc()
        note_id = note.get("note_id")
        if not isinstance(note_id, str) or not note_id.strip():
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter_row(note, "empty or null note_id", self.source))
            return
        if note_id in self.done:
            self.present.inc()
            return
        yield note_id, note


class FirstOfEachId(beam.DoFn):
    """One note per id (the first seen); further rows with that id are dead letters."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.missing_images = Metrics.counter(NAMESPACE, "images_missing")

    def process(self, element):
        _, notes = element
        notes = list(notes)
        if not notes[0].get("image"):
            self.missing_images.inc()
        yield notes[0]
        for extra in notes[1:]:
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter_row(
                extra, "duplicate note_id (the first row was embedded)", self.source))


class WriteEmbeddings(beam.DoFn):
    """Writes vectors to the table in chunks (and at each bundle's end); failures become dead letters."""

    def __init__(self, table_url: str, model_version: str, chunk_size: int, source: str) -> None:
        self.table_url = table_url
        self.model_version = model_version
        self.chunk_size = chunk_size
        self.source = source
        self.embedded = Metrics.counter(NAMESPACE, "embedded")
        self.chunks = Metrics.counter(NAMESPACE, "chunks_written")

    def setup(self) -> None:
        self.table = open_table(self.table_url)

    def start_bundle(self) -> None:
        self.ids: list[str] = []
        self.rows: list[np.ndarray] = []

    def _flush(self) -> None:
        if self.ids:
            self.table.put_many(self.ids, np.stack(self.rows), self.model_version)
            self.embedded.inc(len(self.ids))
            self.chunks.inc()
            self.ids, self.rows = [], []

    def process(self, result: PredictionResult):
        if isinstance(result.inference, str):
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter_row({"note_id": result.example}, result.inference,
                                                                 self.source))
            return
        self.ids.append(result.example)
        self.rows.append(np.asarray(result.inference, dtype=np.float32))
        if len(self.ids) >= self.chunk_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def teardown(self) -> None:
        self.table.close()


class WriteDeadLetters(beam.DoFn):
    """Writes all dead letters as one table, atomically (only when there are any)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, rows: list[dict]):
        if rows:
            write_table(pa.Table.from_pylist(rows, schema=DEAD_LETTER), self.path)
        yield len(rows)


def notes_pattern(path: str) -> str:
    """A file pattern for ReadFromParquet: the file itself, or the directory's visible part files."""
    return path if Path(path).is_file() else str(Path(path) / "[!._]*.parquet")


def build_pipeline(pipeline: beam.Pipeline, config: EmbedJobConfig, model_version: str,
                   done: frozenset[str], dead_letter_path: str) -> None:
    notes = (pipeline | "ReadNotes" >> beam.io.ReadFromParquet(notes_pattern(config.notes))
             | "Validate" >> beam.ParDo(ValidateNotes(done, config.notes)).with_outputs(DEAD, main="valid"))
    unique = (notes.valid | "ById" >> beam.GroupByKey()
              | "FirstOfEachId" >> beam.ParDo(FirstOfEachId(config.notes)).with_outputs(DEAD, main="notes"))
    handler = NoteEncoderModelHandler(config.checkpoint, config.device, config.batch_size,
                                      max_batch_size=min(config.chunk_size, 1024))
    written = (unique.notes | "Embed" >> RunInference(handler)
               | "Write" >> beam.ParDo(WriteEmbeddings(config.table, model_version, config.chunk_size,
                                                       config.notes)).with_outputs(DEAD, main="written"))
    ((notes[DEAD], unique[DEAD], written[DEAD]) | "AllDead" >> beam.Flatten()
     | "DeadList" >> beam.combiners.ToList()
     | "WriteDead" >> beam.ParDo(WriteDeadLetters(dead_letter_path)))


def run_beam_embed(config: EmbedJobConfig, beam_args: list[str] | None = None) -> EmbedJobSummary:
    """Runs the pipeline (DirectRunner unless ``beam_args`` name another) and summarises it."""
    from embedding.checkpoint import read_meta

    started = time.perf_counter()
    open_notes(config.notes)
    model_version = read_meta(config.checkpoint)["model_version"]
    with open_table(config.table) as table:
        done = frozenset() if config.all_notes else frozenset(table.has_ids(model_version))
        url = table.url
    options = beam_options(beam_args)
    dead_letter_path = str(config.dead_letter_path())
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, model_version, done, dead_letter_path)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value or 0)
    summary = EmbedJobSummary(model_version, url)
    summary.notes_read = counters.get("notes_read", 0)
    summary.already_embedded = counters.get("already_embedded", 0)
    summary.embedded = counters.get("embedded", 0)
    summary.chunks_written = counters.get("chunks_written", 0)
    summary.images_missing = counters.get("images_missing", 0)
    summary.images_undecodable = max(0, counters.get("images_failed", 0) - summary.images_missing)
    summary.dead_lettered = summary.notes_read - summary.already_embedded - summary.embedded
    if summary.dead_lettered:
        summary.dead_letter_path = dead_letter_path
    with open_table(config.table) as table:
        if config.compact:
            table.compact()
        summary.table_count = table.count(model_version)
    summary.seconds = time.perf_counter() - started
    return summary
