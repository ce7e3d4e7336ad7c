"""Embedding channels: each gets its own embedding table and FAISS index, built as of day D-1 and
then brought to day D by the offline phase (embed the new notes, ``i2i index update`` with the
deletions), and is served by a real ``i2i serve`` process.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from i2i.app.cli import run_subcommand
from i2i.core.errors import InputError
from i2i.core.io import read_table

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str

    def add_missing(self, notes: Path, table_url: str) -> int | None:
        """Embeds the notes of ``notes`` the table does not hold yet; returns how many (None: the job says)."""


@dataclass
class CheckpointEmbedder:
    """A model checkpoint, embedded by the batch job (``i2i embed``)."""

    name: str
    checkpoint: Path
    device: str | None = None

    def add_missing(self, notes: Path, table_url: str) -> None:
        argv = ["embed", "--notes", str(notes), "--checkpoint", str(self.checkpoint), "--table", table_url,
                "--no-progress"]
        if self.device:
            argv += ["--device", self.device]
        run_subcommand(argv)  # the job prints its own count


@dataclass
class FunctionEmbedder:
    """A baseline encoder (MiniLM, image features) written to the table under its own model version."""

    name: str
    model_version: str
    encode: Callable[[Sequence[dict]], np.ndarray]

    def add_missing(self, notes: Path, table_url: str) -> int:
        from embedding.table import open_table

        rows = read_table(notes).to_pylist()
        with open_table(table_url) as table:
            present = table.has_ids(self.model_version) if self.model_version in table.model_versions() else set()
            todo = [row for row in rows if row["note_id"] not in present]
            if todo:
                vectors = np.asarray(self.encode(todo), dtype=np.float32)
                table.put_many([row["note_id"] for row in todo], vectors, self.model_version)
        print(f"{self.name}: embedded {len(todo)} notes under model version {self.model_version}", flush=True)
        return len(todo)


def minilm_embedder(device: str | None = None) -> FunctionEmbedder:
    from embedding.baselines.minilm import MiniLMEncoder

    encoder = MiniLMEncoder(device=device)
    return FunctionEmbedder("MiniLM text", "baseline-minilm-l6-v2", lambda rows: encoder.encode_notes(rows))


def image_embedder(device: str | None = None) -> FunctionEmbedder:
    from embedding.baselines.image import ImageFeatureEncoder

    encoder = ImageFeatureEncoder(device=device)
    return FunctionEmbedder("image features", "baseline-image-efficientnet-lite0",
                            lambda rows: encoder.encode_notes(rows))


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

    def prepare(self, embedder: Embedder, notes_before: Path, notes_day: Path, deletes: Path | None,
                index_args: Sequence[str] = ()) -> None:
        """Day D-1: embed and build; day D: embed the new notes and update the index (each once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.marker("day_before").exists():
            embedder.add_missing(notes_before, self.table_url)
            run_subcommand(["index", "build", "--index-dir", str(self.index_dir), "--table", self.table_url,
                            *index_args])
            self.marker("day_before").write_text(json.dumps({"version": self.current()}) + "\n")
        if not self.marker("day").exists():
            embedder.add_missing(notes_day, self.table_url)
            argv = ["index", "update", "--index-dir", str(self.index_dir), "--table", self.table_url]
            if deletes is not None:
                argv += ["--deletes", str(deletes)]
            run_subcommand(argv)
            self.marker("day").write_text(json.dumps({"version": self.current()}) + "\n")

    def current(self) -> str:
        path = self.index_dir / "CURRENT"
        if not path.exists():
            raise InputError(f"no index published under {self.index_dir}")
        return path.read_text().strip()
