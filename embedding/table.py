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

from i2i.errors import InputError


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
        """Looks up many ids in one round trip; order of found ids follows the request."""

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
            raise InputError(
                f"embedding table {self.url} has no embeddings for model version {model_version!r} "
                f"(it holds {present or 'none'})"
            )

    def close(self) -> None:
        """Releases connections and flushes buffers."""

    def __enter__(self) -> "EmbeddingTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_table(url: str) -> EmbeddingTable:
    """Opens an embedding table from its TABLE url."""
    if url.startswith("parquet:"):
        from embedding.parquet_table import ParquetEmbeddingTable

        return ParquetEmbeddingTable(url[len("parquet:"):])
    if url.startswith(("redis://", "rediss://")):
        from embedding.redis_table import RedisEmbeddingTable

        return RedisEmbeddingTable(url)
    raise InputError(f"unknown embedding table url {url!r}: expected parquet:DIR or redis://host:port/db")
