"""Stable sharding of Arrow tables by a string key, so one key's rows always meet in one shard.

Python's ``hash`` of a string changes between processes, so distributed workers could disagree;
CRC-32 of the UTF-8 bytes does not. Only the distinct keys of a table are hashed.
"""
from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def shard_of(text: str, num_shards: int) -> int:
    return stable_hash(text) % num_shards


def shard_ids(column: pa.ChunkedArray | pa.Array, num_shards: int) -> np.ndarray:
    """Shard number of every row of a string column, hashing each distinct value once."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
    dictionary = encoded.dictionary.to_pylist()
    per_value = np.fromiter((stable_hash(v) % num_shards for v in dictionary), dtype=np.int64, count=len(dictionary))
    return per_value[encoded.indices.to_numpy(zero_copy_only=False)]


def split_by_shard(table: pa.Table, key: str, num_shards: int) -> Iterator[tuple[int, pa.Table]]:
    """Yields (shard, rows of that shard) for every shard that has rows."""
    if table.num_rows == 0:
        return
    shards = shard_ids(table.column(key), num_shards)
    order = np.argsort(shards, kind="stable")
    sorted_shards = shards[order]
    bounds = np.flatnonzero(np.diff(sorted_shards)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    for start, end in zip(starts, ends):
        yield int(sorted_shards[start]), table.take(pa.array(order[start:end]))
