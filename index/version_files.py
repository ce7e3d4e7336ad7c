"""Reading and writing the files of one index version directory (not the directory's lifecycle).

Files: ``index.faiss`` (the IVF index under its own int64 ids), ``ids.parquet`` (id <-> note_id,
embedding fingerprints), ``vectors.npy`` (float32 rows by id, only when exact re-ranking is on),
``tombstones.parquet`` (note ids deleted through a deletes file; they stay out of child versions)
and ``dead_letter.parquet`` (embeddings refused by the build, with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from i2i.core.io import fsync_path
from i2i.core.schemas import DEAD_LETTER
from index.ids import IdMap

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
VECTORS_FILE = "vectors.npy"
TOMBSTONES_FILE = "tombstones.parquet"
DEAD_LETTER_FILE = "dead_letter.parquet"


@dataclass
class VersionContents:
    """What one version holds, in memory."""

    index: faiss.Index
    ids: IdMap
    vectors: np.ndarray | None = None  # (next_id, dim) float32 by id, for exact re-ranking
    tombstones: set[str] = field(default_factory=set)
    dead_letter: list[dict] = field(default_factory=list)  # {"raw", "reason", "source"}


def write_contents(directory: Path, contents: VersionContents) -> list[str]:
    """Writes and fsyncs every file of a version; returns their names (for the manifest)."""
    names = [INDEX_FILE, IDS_FILE, TOMBSTONES_FILE]
    faiss.write_index(contents.index, str(directory / INDEX_FILE))
    pq.write_table(contents.ids.to_arrow(), directory / IDS_FILE)
    tombstones = pa.table({"note_id": pa.array(sorted(contents.tombstones), pa.string())})
    pq.write_table(tombstones, directory / TOMBSTONES_FILE)
    if contents.vectors is not None:
        np.save(directory / VECTORS_FILE, np.ascontiguousarray(contents.vectors, dtype=np.float32))
        names.append(VECTORS_FILE)
    if contents.dead_letter:
        pq.write_table(pa.Table.from_pylist(contents.dead_letter, schema=DEAD_LETTER), directory / DEAD_LETTER_FILE)
        names.append(DEAD_LETTER_FILE)
    for name in names:
        fsync_path(directory / name)
    return names


def read_contents(directory: Path, next_id: int, files: dict[str, str], mmap_vectors: bool = True) -> VersionContents:
    """Reads a version's files (checksums are verified by the caller before this)."""
    index = faiss.read_index(str(directory / INDEX_FILE))
    ids = IdMap.from_arrow(pq.read_table(directory / IDS_FILE), next_id=next_id)
    vectors = None
    if VECTORS_FILE in files:
        vectors = np.load(directory / VECTORS_FILE, mmap_mode="r" if mmap_vectors else None)
    tombstones: set[str] = set()
    if TOMBSTONES_FILE in files:
        tombstones = set(pq.read_table(directory / TOMBSTONES_FILE).column("note_id").to_pylist())
    return VersionContents(index=index, ids=ids, vectors=vectors, tombstones=tombstones)
