"""Training pairs from related notes, on Arrow tables: join with notes, symmetric dedup, splits.

The splits depend only on the pair and the seed (a keyed BLAKE2b hash of the unordered pair),
so they are the same on every run, runner and shard layout.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from i2i.core.schemas import PAIRS
from pipelines.arrays import run_lengths, sort_order, string_ranks

CANDIDATES = pa.schema(
    [
        pa.field("query_note_id", pa.string(), nullable=False),
        pa.field("target_note_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("query_is_test", pa.bool_(), nullable=False),
        pa.field("target_is_test", pa.bool_(), nullable=False),
        pa.field("pair_low", pa.string(), nullable=False),  # the smaller id of the unordered pair
    ]
)
HASH_SCALE = float(2**64)


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.1
    seed: int = 0
    test_since_ms: int | None = None  # notes published at or after this are test notes


NOTES_LOOKUP = pa.schema([pa.field("note_id", pa.string()), pa.field("published_ms", pa.int64())])


def notes_lookup(notes: pa.Table) -> pa.Table:
    """(note_id, published_at ms) with one row per note id (the earliest publication wins)."""
    published = notes.column("published_at")
    if pa.types.is_timestamp(published.type):
        published = published.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    table = pa.table({"note_id": notes.column("note_id").cast(pa.string()), "published_ms": published.cast(pa.int64())},
                     schema=NOTES_LOOKUP)
    grouped = table.group_by("note_id", use_threads=False).aggregate([("published_ms", "min")])
    return grouped.rename_columns(["note_id", "published_ms"]).select(NOTES_LOOKUP.names).cast(NOTES_LOOKUP)


def merge_lookups(lookups: list[pa.Table]) -> pa.Table:
    """One lookup from per-file lookups (a note listed in several files keeps its earliest time)."""
    if not lookups:
        return NOTES_LOOKUP.empty_table()
    merged = pa.concat_tables(lookups).rename_columns(["note_id", "published_at"])
    return notes_lookup(merged)


def join_notes(related: pa.Table, notes: pa.Table, test_since_ms: int | None) -> tuple[pa.Table, int]:
    """Related rows whose both notes exist, with test flags; returns (candidates, rows dropped)."""
    src, dst = related.column("src_note_id"), related.column("dst_note_id")
    src_index = pc.index_in(src, value_set=notes.column("note_id"))
    dst_index = pc.index_in(dst, value_set=notes.column("note_id"))
    present = pc.and_(pc.is_valid(src_index), pc.is_valid(dst_index))
    dropped = related.num_rows - pc.sum(present.cast(pa.int64())).as_py() if related.num_rows else 0
    related, src_index, dst_index = related.filter(present), src_index.filter(present), dst_index.filter(present)
    published = notes.column("published_ms")

    def is_test(index) -> pa.Array:
        if test_since_ms is None:
            return pa.array(np.zeros(len(index), dtype=bool))
        return pc.fill_null(pc.greater_equal(published.take(index), test_since_ms), False)

    src, dst = related.column("src_note_id"), related.column("dst_note_id")
    candidates = pa.table(
        {
            "query_note_id": src,
            "target_note_id": dst,
            "score": related.column("score"),
            "query_is_test": is_test(src_index),
            "target_is_test": is_test(dst_index),
            "pair_low": pc.if_else(pc.less_equal(src, dst), src, dst),
        },
        schema=CANDIDATES,
    )
    return candidates, int(dropped)


def drop_symmetric(candidates: pa.Table) -> tuple[pa.Table, int]:
    """One row per unordered pair: the higher score wins; on a tie, the row whose query id is smaller.

    Every row of a pair must be in ``candidates``. Returns (rows kept, rows removed).
    """
    if candidates.num_rows == 0:
        return candidates, 0
    query, target = candidates.column("query_note_id"), candidates.column("target_note_id")
    low = candidates.column("pair_low")
    high = pc.if_else(pc.less_equal(query, target), target, query)
    low_codes, _ = string_ranks(low)
    high_codes, _ = string_ranks(high)
    distinct_scores, score_codes = np.unique(-candidates.column("score").to_numpy(), return_inverse=True)
    reversed_ = pc.greater(query, target).to_numpy(zero_copy_only=False).astype(np.int64)
    order = sort_order((low_codes, high_codes, score_codes, reversed_),
                        (int(low_codes.max()) + 1, int(high_codes.max()) + 1, len(distinct_scores), 2))
    _, sizes = run_lengths((low_codes[order], high_codes[order]))
    first = order[np.cumsum(sizes) - sizes]
    return candidates.take(pa.array(np.sort(first))), candidates.num_rows - len(first)


def pair_fraction(low: str, high: str, seed: int) -> float:
    """A number in [0, 1) fixed by the unordered pair and the seed."""
    digest = hashlib.blake2b(f"{low}\x1f{high}".encode("utf-8"), digest_size=8,
                             key=str(seed).encode("utf-8")).digest()
    return int.from_bytes(digest, "big") / HASH_SCALE


def assign_splits(candidates: pa.Table, config: SplitConfig) -> tuple[pa.Table, dict[str, int]]:
    """PAIRS rows: both notes test -> test; one test note -> dropped; else val/train by hash."""
    query_test = candidates.column("query_is_test").to_numpy(zero_copy_only=False)
    target_test = candidates.column("target_is_test").to_numpy(zero_copy_only=False)
    both, neither = query_test & target_test, ~query_test & ~target_test
    lows = candidates.column("pair_low").to_pylist()
    queries = candidates.column("query_note_id").to_pylist()
    targets = candidates.column("target_note_id").to_pylist()
    split = np.full(len(lows), "", dtype=object)
    split[both] = "test"
    for i in np.flatnonzero(neither):
        high = targets[i] if lows[i] == queries[i] else queries[i]
        split[i] = "val" if pair_fraction(lows[i], high, config.seed) < config.val_fraction else "train"
    keep = both | neither
    kept = candidates.filter(pa.array(keep))
    pairs = pa.table(
        {
            "query_note_id": kept.column("query_note_id"),
            "target_note_id": kept.column("target_note_id"),
            "score": kept.column("score"),
            "split": pa.array(split[keep].tolist(), pa.string()),
        },
        schema=PAIRS,
    )
    counts = {name: int(np.count_nonzero(split[keep] == name)) for name in ("train", "val", "test")}
    counts["mixed_dropped"] = int(np.count_nonzero(~keep))
    return pairs, counts
