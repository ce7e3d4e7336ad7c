"""The embedding table: note embeddings keyed by (note_id, model_version), behind one API.

Two backends, chosen by the TABLE url of CONTRACTS.md:
``parquet:DIR`` (the embedded default) and ``redis://[:password@]host:port/db[?prefix=...]``
(``rediss://`` for TLS). The batch embedding job writes it, the index reads it in scans and the
recall server looks up history embeddings in it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from i2i.core.errors import InputError, TemporaryError


class TableUnavailable(TemporaryError):
    """The table's storage cannot be reached (server down, refused, timed out, wrong host or password).

    The recall server maps it to gRPC UNAVAILABLE; the command line prints it as one line and
    exits 75 (retry later).
    """


class ModelVersionMismatch(InputError):
    """The table holds embeddings, but none of the model version asked for: vectors of another
    model live in another space, so lookups against them are refused."""


class DimensionMismatch(InputError):
    """Vectors whose width differs from what the table already holds."""


@dataclass
class Lookup:
    """Result of ``get_many``: rows of ``vectors`` follow ``found_ids``; ``missing_ids`` had no embedding."""

    found_ids: list[str]
    vectors: np.ndarray  # float32, shape (len(found_ids), dim)
    missing_ids: list[str]


class EmbeddingTable(abc.ABC):
    """Note embeddings for one or more model versions."""

    url: str

    @abc.abstractmethod
    def get_many(self, note_ids: Sequence[str], model_version: str) -> Lookup:
        """Looks up many ids in one round trip; order of found ids follows the request.

        Raises ModelVersionMismatch when the table holds embeddings of other model versions but
        none of this one (an empty table just reports every id missing).
        """

    @abc.abstractmethod
    def put_many(self, note_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> None:
        """Inserts or replaces embeddings; ``vectors`` is float32 (n, dim)."""

    @abc.abstractmethod
    def delete_many(self, note_ids: Sequence[str], model_version: str) -> int:
        """Removes embeddings (deleted notes); returns how many existed."""

    @abc.abstractmethod
    def scan(self, model_version: str, batch_size: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yields (note_ids, vectors) batches covering every embedding of a model version once."""

    @abc.abstractmethod
    def count(self, model_version: str) -> int:
        """Number of notes embedded under a model version."""

    @abc.abstractmethod
    def model_versions(self) -> list[str]:
        """Model versions present in the table."""

    def has_ids(self, model_version: str) -> set[str]:
        """Ids embedded under a model version (used to embed only what is new)."""
        return {note_id for ids, _ in self.scan(model_version) for note_id in ids}

    def require_model_version(self, model_version: str) -> None:
        """Refuses lookups against a table that holds no embeddings of this model version."""
        present = self.model_versions()
        if model_version not in present:
            raise ModelVersionMismatch(
                f"embedding table {self.url} has no embeddings for model version {model_version!r} "
                f"(it holds {present or 'none'})"
            )

    def compact(self) -> None:
        """Rewrites an append log to one row per key; backends without one have nothing to do."""

    def refuse_other_versions(self, model_version: str) -> None:
        """Used by ``get_many`` when nothing of ``model_version`` is present: an empty table is
        fine (every id is missing), a table of other versions is refused."""
        if self.model_versions():
            self.require_model_version(model_version)

    def close(self) -> None:
        """Releases connections and flushes buffers."""

    def __enter__(self) -> "EmbeddingTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_vectors(note_ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """Validates a ``put_many`` batch and returns the vectors as a C-contiguous float32 matrix."""
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim != 2:
        raise InputError(f"embeddings must be a 2-D matrix, got shape {matrix.shape}")
    if matrix.shape[0] != len(note_ids):
        raise InputError(f"{len(note_ids)} note ids but {matrix.shape[0]} embedding rows")
    if matrix.shape[1] == 0:
        raise InputError("embeddings have zero width")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InputError(f"embedding of note {note_ids[bad]!r} has NaN or infinite values")
    for note_id in note_ids:
        if not isinstance(note_id, str) or not note_id.strip():
            raise InputError(f"note id {note_id!r} is not a non-empty string")
    return matrix


REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
PARQUET_SCHEME = "parquet:"


def is_in_process(url: str) -> bool:
    """True for a table read into this process (Parquet): its lookups never wait on a network."""
    return url.startswith(PARQUET_SCHEME)


def open_table(url: str) -> EmbeddingTable:
    """Opens an embedding table from its TABLE url.

    ``parquet:DIR``; ``redis://[:password@]host:port/db[?prefix=P&ttl=SECONDS&cluster=1]``,
    ``rediss://`` for TLS, ``redis+cluster://`` (or ``cluster=1``) for Redis Cluster.
    """
    if is_in_process(url):
        from embedding.table.parquet import ParquetEmbeddingTable

        return ParquetEmbeddingTable(url[len(PARQUET_SCHEME):])
    if url.startswith(REDIS_SCHEMES):
        from embedding.table.redis import RedisEmbeddingTable

        return RedisEmbeddingTable(url)
    raise InputError(f"unknown embedding table url {url!r}: expected parquet:DIR or redis://host:port/db")
