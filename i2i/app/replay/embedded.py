"""Embedding channels: each gets its own embedding table and FAISS index, built as of day D-1 and
then brought to day D by the offline phase (embed the new notes, an index update with the
deletions), and is served by a real ``i2i serve`` process.

The stages are the project's own, through their typed entry points: ``embedding.embed_cli.run``
for a checkpoint, ``index.jobs.run`` for the index.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from i2i.app.replay.build import check_marker, write_marker
from i2i.core.errors import InputError
from i2i.core.io import read_table

Log = Callable[[str], None]


class Embedder(Protocol):
    name: str

    def identity(self) -> dict[str, Any]:
        """What the embeddings depend on (recorded beside the channel's outputs)."""

    def add_missing(self, notes: Path, table_url: str, log: Log) -> None:
        """Embeds the notes of ``notes`` the table does not hold yet."""


@dataclass
class CheckpointEmbedder:
    """A model checkpoint, embedded by the batch embedding job."""

    name: str
    checkpoint: Path
    device: str | None = None
    vision_cache: Path | None = None  # shared by the channels whose checkpoints have one frozen vision encoder

    def identity(self) -> dict[str, Any]:
        from embedding.checkpoint import read_meta

        return {"model_version": read_meta(self.checkpoint)["model_version"]}

    def add_missing(self, notes: Path, table_url: str, log: Log) -> None:
        from embedding.embed_cli import run
        from embedding.embed_job import EmbedJobConfig

        job = EmbedJobConfig(str(notes), str(self.checkpoint), table_url, device=self.device, progress=False,
                             vision_cache=str(self.vision_cache) if self.vision_cache else None)
        summary = run(job)
        log(f"{self.name}: embedded {summary.embedded} of {summary.notes_read} notes of {notes.name} "
            f"({summary.already_embedded} already present) in {summary.seconds:.1f}s")


@dataclass
class FunctionEmbedder:
    """A baseline encoder (MiniLM, image features) written to the table under its own model version.

    The encoder is made on first use, so a channel whose table is complete never loads it."""

    name: str
    model_version: str
    make_encode: Callable[[], Callable[[Sequence[dict]], np.ndarray]]

    def identity(self) -> dict[str, Any]:
        return {"model_version": self.model_version}

    def add_missing(self, notes: Path, table_url: str, log: Log) -> None:
        from embedding.table import open_table

        with open_table(table_url) as table:
            present = table.has_ids(self.model_version) if self.model_version in table.model_versions() else set()
            ids = read_table(notes, columns=["note_id"]).column("note_id").to_pylist()
            if any(note_id not in present for note_id in ids):
                rows = [row for row in read_table(notes).to_pylist() if row["note_id"] not in present]
                vectors = np.asarray(self.make_encode()(rows), dtype=np.float32)
                table.put_many([row["note_id"] for row in rows], vectors, self.model_version)
                log(f"{self.name}: embedded {len(rows)} notes of {notes.name} under model version {self.model_version}")


def minilm_embedder(device: str | None = None) -> FunctionEmbedder:
    def make() -> Callable[[Sequence[dict]], np.ndarray]:
        from embedding.baselines.minilm import MiniLMEncoder

        return MiniLMEncoder(device=device).encode_notes

    return FunctionEmbedder("MiniLM text", "baseline-minilm-l6-v2", make)


def image_embedder(device: str | None = None) -> FunctionEmbedder:
    def make() -> Callable[[Sequence[dict]], np.ndarray]:
        from embedding.baselines.image import ImageFeatureEncoder

        return ImageFeatureEncoder(device=device).encode_notes

    return FunctionEmbedder("image features", "baseline-image-efficientnet-lite0", make)


@dataclass
class ChannelIndex:
    """Where one embedding channel's table and index live, and which phases are done."""

    root: Path

    @property
    def table_url(self) -> str:
        return f"parquet:{self.root / 'table'}"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def marker(self, phase: str) -> Path:
        return self.root / f"_{phase}.done.json"

    def prepare(self, embedder: Embedder, notes_before: Path, new_notes: Path, deletes: Path | None,
                made_from: dict[str, Any], log: Log) -> None:
        """Day D-1: embed and build; day D: embed the new notes and update the index (each once)."""
        from index.jobs import IndexJob, run

        self.root.mkdir(parents=True, exist_ok=True)
        made_from = {**made_from, **embedder.identity()}
        if not check_marker(self.marker("day_before"), made_from, "a channel index"):
            embedder.add_missing(notes_before, self.table_url, log)
            summary = run(IndexJob("build", str(self.index_dir), self.table_url))
            log(f"{embedder.name}: " + "\n  ".join(summary.lines()))
            write_marker(self.marker("day_before"), made_from, version=self.current())
        if not check_marker(self.marker("day"), made_from, "a channel index"):
            embedder.add_missing(new_notes, self.table_url, log)
            summary = run(IndexJob("update", str(self.index_dir), self.table_url,
                                   deletes=str(deletes) if deletes is not None else None))
            log(f"{embedder.name}: " + "\n  ".join(summary.lines()))
            write_marker(self.marker("day"), made_from, version=self.current())

    def current(self) -> str:
        path = self.index_dir / "CURRENT"
        if not path.exists():
            raise InputError(f"no index published under {self.index_dir}")
        return path.read_text().strip()

    def day_version(self) -> str:
        """The index version of day D (after the update)."""
        return json.loads(self.marker("day").read_text())["version"]
