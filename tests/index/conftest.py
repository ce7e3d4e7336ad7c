"""Fixtures for the index: small Parquet embedding tables of clustered unit vectors."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from i2i.core.schemas import embeddings_schema

DIM = 16
MODEL = "m-test-1"

# The test hosts have two shared cores: OpenMP teams spinning against other processes make small
# FAISS calls tens of times slower, so the index tests run FAISS single-threaded.
faiss.omp_set_num_threads(1)


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 12, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around random cluster centres (what trained note embeddings look like to an IVF index)."""
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def write_embeddings(directory: Path, note_ids: list[str], vectors: np.ndarray, model_version: str = MODEL,
                     part: int = 0) -> None:
    """Writes one part file of the contract's embeddings table with pyarrow."""
    directory.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    table = pa.table(
        {
            "note_id": pa.array(note_ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
            "model_version": pa.array([model_version] * len(note_ids), pa.string()),
            "embedded_at": pa.array([datetime.now(timezone.utc)] * len(note_ids), pa.timestamp("ms", tz="UTC")),
        },
        schema=embeddings_schema(dim),
    )
    pq.write_table(table, directory / f"part-{part:010d}-{part:08x}.parquet")


@dataclass
class Corpus:
    note_ids: list[str]
    vectors: np.ndarray
    table_dir: Path

    @property
    def url(self) -> str:
        return f"parquet:{self.table_dir}"


@pytest.fixture
def corpus(tmp_path) -> Corpus:
    rng = np.random.default_rng(7)
    note_ids = [f"note-{i:05d}" for i in range(1500)]
    vectors = clustered(rng, len(note_ids))
    table_dir = tmp_path / "embeddings"
    write_embeddings(table_dir, note_ids, vectors)
    return Corpus(note_ids, vectors, table_dir)


@pytest.fixture
def make_vectors():
    """clustered(...) for tests that need more vectors of the same shape."""
    return clustered


@pytest.fixture
def model_version() -> str:
    return MODEL
