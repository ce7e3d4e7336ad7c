"""The batch embedding job (paper Figure 5, offline): embed the notes a table does not hold yet.

The notes table is read in chunks of ``chunk_size`` rows; the notes of a chunk that the table does
not hold for the checkpoint's ``model_version`` (all of them with ``all_notes``) are sorted by
token length, embedded in batches of ``batch_size`` (bf16 autocast on CUDA) and written to the
table in one ``put_many``. A crash therefore loses at most the chunk in flight, and a rerun skips
every note already written, so no ``(note_id, model_version)`` is embedded twice.

Bad records never stop the job: a row with an empty or null ``note_id``, a repeated ``note_id``,
or a note the model cannot process goes to a dead-letter table with the reason. A note whose
image is missing or undecodable is embedded from its text alone (the model sees a blank image)
and counted; empty text and text beyond the prompt's token cap are handled by the prompt builder
(an empty prompt body, truncation).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from embedding.table import EmbeddingTable, open_table
from i2i.core.errors import InputError
from i2i.core.io import write_table
from i2i.core.schemas import DEAD_LETTER, NOTES, validate

log = logging.getLogger(__name__)

AUTO_COMPACT_PARTS = 64  # a Parquet table with more part files than this is compacted after the run


@dataclass
class EmbedJobConfig:
    notes: str
    checkpoint: str
    table: str
    all_notes: bool = False
    batch_size: int | None = None  # None: the encoder's default (256 on a GPU, 32 on a CPU)
    chunk_size: int = 1024  # notes per table write: the most a crash can lose
    device: str | None = None  # None: CUDA when present, else CPU
    dead_letter: str | None = None  # None: "<notes>_embed_dead_letter" beside the notes table
    progress: bool = True
    compact: bool | None = None  # None: compact a Parquet table when it has many part files
    vision_cache: str | None = None  # directory of cached frozen vision features (embedding.vision_cache)

    def __post_init__(self) -> None:
        if (self.batch_size is not None and self.batch_size <= 0) or self.chunk_size <= 0:
            raise InputError("batch size and chunk size must be positive")

    def dead_letter_path(self) -> Path:
        if self.dead_letter:
            return Path(self.dead_letter)
        notes = Path(self.notes)
        base = notes.with_suffix("") if notes.is_file() else notes
        return base.parent / f"{base.name}_embed_dead_letter"


@dataclass
class EmbedJobSummary:
    model_version: str
    table: str
    notes_read: int = 0
    already_embedded: int = 0
    embedded: int = 0
    dead_lettered: int = 0
    images_missing: int = 0
    images_undecodable: int = 0
    chunks_written: int = 0
    seconds: float = 0.0  # reading, embedding and writing (the model load is load_seconds)
    load_seconds: float = 0.0
    table_count: int = 0
    dead_letter_path: str | None = None
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def notes_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        lines = [
            f"model version   {self.model_version}",
            f"notes read      {self.notes_read}",
            f"already present {self.already_embedded}",
            f"embedded        {self.embedded} in {self.chunks_written} chunks, {self.seconds:.1f} s "
            f"({self.notes_per_second:.1f} notes/s)",
            f"images          {self.images_missing} missing, {self.images_undecodable} undecodable "
            "(embedded from text alone)",
            f"dead letters    {self.dead_lettered}"
            + (f" -> {self.dead_letter_path} {self.dead_letter_reasons}" if self.dead_lettered else ""),
            f"table           {self.table} ({self.table_count} embeddings of this version)",
        ]
        if self.load_seconds:
            lines.append(f"model load      {self.load_seconds:.1f} s")
        return lines


def dead_letter_row(note: dict[str, Any], reason: str, source: str) -> dict[str, str]:
    """The note as JSON (image bytes summarised by their length) with the reason."""
    raw = {key: (f"<{len(value)} bytes>" if isinstance(value, bytes) else value) for key, value in note.items()}
    return {"raw": json.dumps(raw, default=str, ensure_ascii=False), "reason": reason, "source": source}


def open_notes(path: str) -> ds.Dataset:
    """The notes table as a dataset, after checking its columns and types against the contract."""
    if not Path(path).exists():
        raise InputError(f"notes table not found: {path}")
    try:
        dataset = ds.dataset(path, format="parquet", ignore_prefixes=[".", "_"])
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read notes table {path}: {exc}") from exc
    # Columns and types are checked on a one-row sample (pyarrow 25's indices_nonzero crashes on
    # empty columns); row-level problems are the dead letters' business, not the table's.
    sample = dataset.head(1)
    if sample.num_rows == 0:
        missing = [name for name in NOTES.names if name not in dataset.schema.names]
        if missing:
            raise InputError(f"notes table {path} does not fit the contract: missing columns {missing}")
        return dataset
    report = validate(sample, "notes")
    errors = [e for e in report.errors if e.reason == "missing column" or e.reason.startswith("type ")]
    if errors:
        raise InputError(f"notes table {path} does not fit the contract: " + "; ".join(map(str, errors)))
    return dataset


class ChunkEmbedder:
    """Embeds one chunk of notes: sorted by length, batched, a failing batch retried note by note."""

    def __init__(self, encoder, batch_size: int | None, progress=None) -> None:
        self.encoder = encoder
        self.batch_size = batch_size or encoder.default_batch_size
        self.progress = progress

    def _embed_one_by_one(self, notes: list[dict[str, Any]]) -> tuple[list[np.ndarray | None], list[str]]:
        vectors, reasons = [], []
        for note in notes:
            try:
                vectors.append(self.encoder.embed_prepared(self.encoder.prepare([note])).cpu().numpy()[0])
                reasons.append("")
            except Exception as exc:
                vectors.append(None)
                reasons.append(f"model failed on this note: {type(exc).__name__}: {exc}")
        return vectors, reasons

    def __call__(self, notes: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, list[tuple[dict, str]]]:
        order = sorted(range(len(notes)), key=lambda i: self.encoder.token_length(notes[i]))
        batches = [[notes[i] for i in order[s:s + self.batch_size]] for s in range(0, len(order), self.batch_size)]
        ids: list[str] = []
        rows: list[np.ndarray] = []
        failed: list[tuple[dict, str]] = []
        # On a GPU the next batches are tokenised and their images decoded while the current one runs.
        with self.encoder.inference():
            for batch, (ready, error) in zip(batches, self.encoder.prepared(batches)):
                try:
                    if error is not None:
                        raise error
                    matrix = self.encoder.embed_prepared(ready).cpu().numpy()
                    ids += [note["note_id"] for note in batch]
                    rows.append(matrix)
                except Exception:
                    vectors, reasons = self._embed_one_by_one(batch)
                    for note, vector, reason in zip(batch, vectors, reasons):
                        if vector is None:
                            failed.append((note, reason))
                        else:
                            ids.append(note["note_id"])
                            rows.append(vector[None, :])
                if self.progress is not None:
                    self.progress.update(len(batch))
        matrix = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, self.encoder.dim), np.float32)
        return ids, matrix, failed


def pending_chunks(dataset: ds.Dataset, done: set[str], chunk_size: int, summary: EmbedJobSummary,
                   dead: list[dict[str, str]], source: str) -> Iterator[list[dict[str, Any]]]:
    """Chunks of valid notes still to embed; bad rows go to ``dead``."""
    seen: set[str] = set()
    chunk: list[dict[str, Any]] = []
    for record_batch in dataset.to_batches(batch_size=chunk_size):
        for note in record_batch.to_pylist():
            summary.notes_read += 1
            note_id = note.get("note_id")
            if not isinstance(note_id, str) or not note_id.strip():
                dead.append(dead_letter_row(note, "empty or null note_id", source))
                continue
            if note_id in seen:
                dead.append(dead_letter_row(note, "duplicate note_id (the first row was embedded)", source))
                continue
            seen.add(note_id)
            if note_id in done:
                summary.already_embedded += 1
                continue
            chunk.append(note)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def count_pending(dataset: ds.Dataset, done: set[str], all_notes: bool) -> int:
    ids = dataset.to_table(columns=["note_id"]).column("note_id").to_pylist()
    return len({i for i in ids if i and i.strip()} - (set() if all_notes else done))


def run_embed_job(config: EmbedJobConfig, encoder=None, table: EmbeddingTable | None = None) -> EmbedJobSummary:
    """Runs the job; ``encoder``/``table`` may be passed in already open (benchmarks, the Beam job)."""
    loading = time.perf_counter()
    dataset = open_notes(config.notes)
    if encoder is None:
        from embedding.checkpoint import load_encoder

        encoder = load_encoder(config.checkpoint, device=config.device)
    if config.vision_cache:
        encoder.use_vision_cache(config.vision_cache)
    started = time.perf_counter()
    own_table = table is None
    table = open_table(config.table) if table is None else table
    summary = EmbedJobSummary(encoder.model_version, table.url)
    dead: list[dict[str, str]] = []
    try:
        done = set() if config.all_notes else table.has_ids(encoder.model_version)
        progress = None
        if config.progress:
            from tqdm import tqdm

            progress = tqdm(total=count_pending(dataset, done, config.all_notes), desc="embedding",
                            unit="note", smoothing=0.1)
        embedder = ChunkEmbedder(encoder, config.batch_size, progress)
        failures_before = encoder.image_failures
        try:
            for chunk in pending_chunks(dataset, done, config.chunk_size, summary, dead, config.notes):
                summary.images_missing += sum(1 for note in chunk if not note.get("image"))
                ids, matrix, failed = embedder(chunk)
                dead += [dead_letter_row(note, reason, config.notes) for note, reason in failed]
                if ids:
                    table.put_many(ids, matrix, encoder.model_version)
                    summary.embedded += len(ids)
                    summary.chunks_written += 1
        finally:
            if progress is not None:
                progress.close()
            if config.vision_cache:
                encoder.close()  # the features computed so far stay cached, also after a failure
        if getattr(encoder.config, "uses_image", True):
            summary.images_undecodable = max(0, encoder.image_failures - failures_before - summary.images_missing)
        else:
            summary.images_missing = 0
        if dead:
            path = config.dead_letter_path()
            write_table(pa.Table.from_pylist(dead, schema=DEAD_LETTER), path)
            summary.dead_letter_path = str(path)
            summary.dead_lettered = len(dead)
            for row in dead:
                reason = row["reason"].split(":")[0]
                summary.dead_letter_reasons[reason] = summary.dead_letter_reasons.get(reason, 0) + 1
        compact = config.compact
        if compact is None:
            compact = len(getattr(table, "parts", lambda: [])()) > AUTO_COMPACT_PARTS
        if compact:
            table.compact()
        summary.table_count = table.count(encoder.model_version)
    finally:
        if own_table:
            table.close()
    summary.seconds = time.perf_counter() - started
    summary.load_seconds = started - loading
    log.debug("embed job done: %s", json.dumps({k: v for k, v in asdict(summary).items()}, default=str))
    return summary
