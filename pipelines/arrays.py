"""Vectorised building blocks over numpy int columns and Arrow string columns.

Strings are replaced by integer codes that sort like them, several int columns are packed into
one int64 key whenever their ranges allow, and one sort then serves grouping, deduplication and
deterministic ordering.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INT64_SAFE = 2**62


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1])



def string_ranks(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer codes that sort like the strings (code i = i-th smallest value), and those values."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank_of_code = np.empty(len(order), dtype=np.int64)
    rank_of_code[order] = np.arange(len(order), dtype=np.int64)
    codes = rank_of_code[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(order))



def sort_order(columns: tuple[np.ndarray, ...], bases: tuple[int, ...]) -> np.ndarray:
    """Row order sorting by the columns (first = most significant) of small non-negative ints.

    One int64 key and one argsort when the product of ``bases`` fits, else a lexsort.
    """
    total = 1
    for base in bases:
        total *= max(int(base), 1)
    if total < INT64_SAFE:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for column, base in zip(columns, bases):
            key = key * max(int(base), 1) + column
        return np.argsort(key, kind="stable")
    return np.lexsort(tuple(reversed(columns)))



def run_lengths(columns: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Runs of equal consecutive rows (columns already sorted): the rows and their lengths."""
    change = np.zeros(len(columns[0]), dtype=bool)
    if len(change):
        change[0] = True
        for c in columns:
            change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    return [c[starts] for c in columns], np.diff(np.concatenate([starts, [len(change)]]))



def unique_rows(columns: tuple[np.ndarray, ...], bases: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of small non-negative int columns, sorted, and how often each occurs.

    Packs the columns into one int64 key (a sort, then unpacking) when the product of ``bases``
    fits, else sorts the rows with a lexsort.
    """
    bases = tuple(max(int(b), 1) for b in bases)
    total = 1
    for base in bases:
        total *= base
    if total < INT64_SAFE:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for column, base in zip(columns, bases):
            key = key * base + column
        key.sort()
        boundary = np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else np.zeros(0, bool)
        starts = np.flatnonzero(boundary)
        counts = np.diff(np.concatenate([starts, [len(key)]]))
        unique = key[starts]
        decoded = []
        for base in reversed(bases):
            unique, digit = np.divmod(unique, base)
            decoded.append(digit)
        return decoded[::-1], counts
    order = np.lexsort(tuple(reversed(columns)))
    stacked = np.stack([c[order] for c in columns], axis=1)
    boundary = np.concatenate([[True], np.any(stacked[1:] != stacked[:-1], axis=1)]) if len(order) else np.zeros(0, bool)
    starts = np.flatnonzero(boundary)
    counts = np.diff(np.concatenate([starts, [len(order)]]))
    return [stacked[starts, i] for i in range(len(columns))], counts



def sum_by_rows(columns: tuple[np.ndarray, ...], bases: tuple[int, ...], weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows and the sum of ``weights`` over each (weights are non-negative ints)."""
    order = sort_order(columns, bases)
    rows, sizes = run_lengths(tuple(c[order] for c in columns))
    starts = np.cumsum(sizes) - sizes
    sums = np.add.reduceat(weights[order], starts) if len(starts) else np.zeros(0, np.int64)
    return rows, sums


def compact_dictionaries(table: pa.Table) -> pa.Table:
    """Drops dictionary values a table's rows do not use (a shard's piece of a table otherwise
    carries, and ships, the whole dictionary)."""
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type) or table.num_rows == 0:
            continue
        column = table.column(index).combine_chunks()
        codes = column.indices.to_numpy(zero_copy_only=False)
        used = np.zeros(len(column.dictionary), dtype=bool)
        used[codes] = True
        if used.all():
            continue
        new_code = np.cumsum(used) - 1
        compacted = pa.DictionaryArray.from_arrays(pa.array(new_code[codes].astype(np.int32)),
                                                   column.dictionary.filter(pa.array(used)))
        table = table.set_column(index, field, compacted)
    return table
