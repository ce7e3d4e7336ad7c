"""Stable sharding of Arrow tables by a string key, so one key's rows always meet in one shard.

Python's ``hash`` of a string changes between processes, so distributed workers could disagree.
The hash here is a fixed function of the UTF-8 bytes (a polynomial over the bytes, then the
splitmix64 finaliser), computed with numpy over whole Arrow columns at once.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PRIME = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash_strings(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash of every string (nulls hash like empty strings)."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
    strings = pc.fill_null(strings.cast(pa.large_binary()), b"")
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset: strings.offset + len(strings) + 1]
    lengths = np.diff(offsets)
    first = int(offsets[0]) if len(offsets) else 0
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = data[first: int(offsets[-1]) if len(offsets) else 0].astype(np.uint64)
    starts = offsets[:-1] - first
    position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        longest = int(lengths.max(initial=0))
        powers = np.ones(longest + 1, dtype=np.uint64)  # powers[i] = PRIME**i mod 2**64
        powers[1:] = np.cumprod(np.full(longest, _PRIME, dtype=np.uint64))
        terms = (data + np.uint64(1)) * powers[position]
        hashes = np.zeros(len(lengths), dtype=np.uint64)
        nonempty = lengths > 0
        if nonempty.any():
            hashes[nonempty] = np.add.reduceat(terms, starts[nonempty])
        hashes ^= lengths.astype(np.uint64)
        hashes ^= hashes >> np.uint64(30)
        hashes *= _MIX1
        hashes ^= hashes >> np.uint64(27)
        hashes *= _MIX2
        hashes ^= hashes >> np.uint64(31)
    return hashes


def stable_hash(text: str) -> int:
    return int(hash_strings(pa.array([text], pa.string()))[0])


def shard_ids(column: pa.ChunkedArray | pa.Array, num_shards: int) -> np.ndarray:
    """Shard number of every row of a string column, hashing each distinct value once."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
    per_value = (hash_strings(encoded.dictionary) % np.uint64(num_shards)).astype(np.int64)
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
