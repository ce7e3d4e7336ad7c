"""Paper eq. 2 on Arrow tables with numpy: per-user pairs, exact score sums, top-t related notes.

These functions hold all of the arithmetic; the Beam transforms only move tables between them.
Working on whole tables (many users at once) keeps the per-element cost of a runner out of the
quadratic part of the job.

Rules (CONTRACTS.md, "Co-occurrence"):
- a user's events are capped to the latest ``max_events_per_user`` (ordered by time, then note id,
  then action, so the cut is deterministic); N_u and the pairs use the kept events only;
- N_u = distinct notes the user clicked;
- u is in U(A->B) when an event on A at t1 and a click on B at t2 satisfy t1 < t2 <= t1 + window
  and A != B; a user counts once per ordered pair;
- score(A->B) = sum over U(A->B) of 1/N_u, rounded once from the exact rational sum, so the
  result does not depend on the order in which a runner combines partial sums, and equal sums
  tie exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from i2i.schemas import RELATED, SCORES

PARTIALS = pa.schema(
    [
        pa.field("src_note_id", pa.string(), nullable=False),
        pa.field("dst_note_id", pa.string(), nullable=False),
        pa.field("n_u", pa.int64(), nullable=False),  # N_u of the users counted in this row
        pa.field("users", pa.int64(), nullable=False),  # how many users with that N_u
    ]
)
INT64_SAFE = 2**62
FLOAT_EXACT = 2**53


@dataclass
class UserStats:
    """Counts over the users of one table; they add up across shards."""

    users: int = 0
    capped_users: int = 0
    kept_events: int = 0
    user_pairs: int = 0  # (user, A, B) memberships after the once-per-user rule

    def as_counts(self) -> dict[str, int]:
        return {"users": self.users, "capped_users": self.capped_users,
                "kept_events": self.kept_events, "user_pairs": self.user_pairs}


@dataclass
class PairBlockLimits:
    """Bounds the memory of one step: candidate pairs are expanded a block of users at a time."""

    max_candidates: int = 4_000_000


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1])


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _unique_rows(*columns: np.ndarray, bases: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of small non-negative int columns: (first index of each unique row, counts).

    Combines the columns into one int64 key when the product of ``bases`` fits, else sorts rows.
    """
    total = 1
    for base in bases:
        total *= max(int(base), 1)
    if total < INT64_SAFE:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for column, base in zip(columns, bases):
            key = key * max(int(base), 1) + column
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        return first, counts
    order = np.lexsort(tuple(reversed(columns)))
    stacked = np.stack([c[order] for c in columns], axis=1)
    change = np.any(stacked[1:] != stacked[:-1], axis=1)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]) if len(order) else np.zeros(0, np.int64)
    counts = np.diff(np.concatenate([starts, [len(order)]]))
    return order[starts], counts


def user_pair_partials(events: pa.Table, window_seconds: float, max_events_per_user: int,
                       limits: PairBlockLimits | None = None) -> tuple[pa.Table, UserStats]:
    """From the events of whole users (every event of a user must be in ``events``) to partial sums.

    Returns rows (src, dst, n_u, users): ``users`` users with that N_u are in U(src->dst).
    """
    limits = limits or PairBlockLimits()
    stats = UserStats()
    if events.num_rows == 0:
        return PARTIALS.empty_table(), stats
    ts_column = events.column("ts")
    if pa.types.is_timestamp(ts_column.type):
        ts_column = ts_column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    table = pa.table({"user_id": events.column("user_id"), "note_id": events.column("note_id"),
                      "action": events.column("action"), "ts": ts_column})
    order = pc.sort_indices(table, sort_keys=[("user_id", "ascending"), ("ts", "ascending"),
                                              ("note_id", "ascending"), ("action", "ascending")])
    table = table.take(order)
    user_codes, _ = _codes(table.column("user_id"))  # sorted by user id, so runs are contiguous
    ts = table.column("ts").to_numpy().astype(np.int64)

    # Per-user cap: keep the latest events (the table is sorted by time within each user).
    starts = _group_starts(user_codes)
    sizes = np.diff(np.concatenate([starts, [len(user_codes)]]))
    user_rank = np.repeat(np.arange(len(starts), dtype=np.int64), sizes)
    position = np.arange(len(user_codes), dtype=np.int64) - starts[user_rank]
    keep = position >= (sizes - max_events_per_user)[user_rank]
    stats.users = len(starts)
    stats.capped_users = int(np.count_nonzero(sizes > max_events_per_user))
    if not keep.all():
        table = table.filter(pa.array(keep))
        user_rank, ts = user_rank[keep], ts[keep]
    stats.kept_events = table.num_rows
    note_codes, note_dictionary = _codes(table.column("note_id"))
    is_click = pc.equal(table.column("action"), "click").to_numpy(zero_copy_only=False)
    num_users, num_notes = stats.users, len(note_dictionary)

    # N_u: distinct clicked notes per user.
    first, _ = _unique_rows(user_rank[is_click], note_codes[is_click], bases=(num_users, num_notes))
    n_u = np.bincount(user_rank[is_click][first], minlength=num_users).astype(np.int64)

    # Candidate pairs: for event i, clicks j of the same user with ts_i < ts_j <= ts_i + window.
    window_ms = int(round(window_seconds * 1000))
    base_ts = int(ts.min())
    span = int(ts.max()) - base_ts + window_ms + 1
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    user_starts = _group_starts(user_rank)
    user_ends = np.concatenate([user_starts[1:], [len(user_rank)]])
    users_per_block = max(1, min(num_users, INT64_SAFE // span - 1))
    block_start = 0
    while block_start < num_users:
        block_end = min(num_users, block_start + users_per_block)
        rows = slice(int(user_starts[block_start]), int(user_ends[block_end - 1]))
        block_pieces = _block_pairs(user_rank[rows] - block_start, ts[rows] - base_ts, note_codes[rows],
                                    is_click[rows], span, window_ms, num_notes, limits.max_candidates)
        for users_local, src, dst in block_pieces:
            pieces.append((users_local + block_start, src, dst))
        block_start = block_end
    if not pieces:
        return PARTIALS.empty_table(), stats
    pair_users = np.concatenate([p[0] for p in pieces])
    src = np.concatenate([p[1] for p in pieces])
    dst = np.concatenate([p[2] for p in pieces])
    stats.user_pairs = len(pair_users)
    weights = n_u[pair_users]
    max_n = int(weights.max()) + 1 if len(weights) else 1
    first, counts = _unique_rows(src, dst, weights, bases=(num_notes, num_notes, max_n))
    partials = pa.table(
        {
            "src_note_id": note_dictionary.take(pa.array(src[first])),
            "dst_note_id": note_dictionary.take(pa.array(dst[first])),
            "n_u": pa.array(weights[first], pa.int64()),
            "users": pa.array(counts.astype(np.int64), pa.int64()),
        },
        schema=PARTIALS,
    )
    return partials, stats


def _block_pairs(users: np.ndarray, ts: np.ndarray, notes: np.ndarray, is_click: np.ndarray, span: int,
                 window_ms: int, num_notes: int, max_candidates: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Deduplicated (user, A, B) of users [0, users.max()] whose keys fit in int64; memory-bounded."""
    key = users * span + ts  # sorted: events are ordered by user, then time
    click_key = key[is_click]
    click_notes = notes[is_click]
    lo = np.searchsorted(click_key, key, side="right")  # first click strictly later, same user
    hi = np.searchsorted(click_key, key + window_ms, side="right")  # last click within the window
    counts = hi - lo
    out = []
    # Split the events into chunks of at most max_candidates expanded pairs, on user boundaries,
    # so each user's pairs are deduplicated inside one chunk.
    user_starts = _group_starts(users)
    user_ends = np.concatenate([user_starts[1:], [len(users)]])
    user_totals = np.add.reduceat(counts, user_starts)
    chunk_first_user = 0
    num_block_users = len(user_starts)
    while chunk_first_user < num_block_users:
        running = np.cumsum(user_totals[chunk_first_user:])
        last = int(np.searchsorted(running, max_candidates, side="right"))
        chunk_last_user = chunk_first_user + max(last, 1)  # exclusive; at least one user
        rows = slice(int(user_starts[chunk_first_user]), int(user_ends[chunk_last_user - 1]))
        chunk_counts = counts[rows]
        total = int(chunk_counts.sum())
        if total:
            event_index = np.repeat(np.arange(rows.start, rows.stop, dtype=np.int64), chunk_counts)
            offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(chunk_counts) - chunk_counts, chunk_counts)
            click_pos = lo[event_index] + offsets
            src, dst, pair_users = notes[event_index], click_notes[click_pos], users[event_index]
            distinct = src != dst
            src, dst, pair_users = src[distinct], dst[distinct], pair_users[distinct]
            first, _ = _unique_rows(pair_users, src, dst, bases=(int(users.max()) + 1, num_notes, num_notes))
            out.append((pair_users[first], src[first], dst[first]))
        chunk_first_user = chunk_last_user
    return out


def exact_scores(partials: pa.Table) -> pa.Table:
    """Sums partial rows into (src, dst, score, users); score is the exact rational sum, rounded once."""
    if partials.num_rows == 0:
        return SCORES.empty_table()
    grouped = partials.group_by(["src_note_id", "dst_note_id", "n_u"], use_threads=False).aggregate([("users", "sum")])
    grouped = grouped.sort_by([("src_note_id", "ascending"), ("dst_note_id", "ascending"), ("n_u", "ascending")])
    n = grouped.column("n_u").to_numpy().astype(np.int64)
    c = grouped.column("users_sum").to_numpy().astype(np.int64)
    src_codes, _ = _codes(grouped.column("src_note_id"))
    dst_codes, _ = _codes(grouped.column("dst_note_id"))
    change = (src_codes[1:] != src_codes[:-1]) | (dst_codes[1:] != dst_codes[:-1])
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    sizes = np.diff(np.concatenate([starts, [len(n)]]))
    users = np.add.reduceat(c, starts)
    score = np.empty(len(starts), dtype=np.float64)

    single = sizes == 1
    score[single] = c[starts[single]] / n[starts[single]]  # both exact below 2**53: one rounding

    multi = np.flatnonzero(~single)
    if len(multi):
        # Common denominator D = lcm(n); numerator = sum(c * D / n); exact in int64 when small.
        log_bound = np.add.reduceat(np.log2(n.astype(np.float64)), starts)[multi]
        bound_users = users[multi].astype(np.float64)
        fits = (log_bound < 52) & (log_bound + np.log2(bound_users) < 52)
        fast = multi[fits]
        if len(fast):
            rows_mask = np.repeat(np.isin(np.arange(len(starts)), fast), sizes)
            sub_n, sub_c = n[rows_mask], c[rows_mask]
            sub_starts = np.concatenate([[0], np.cumsum(sizes[fast])[:-1]])
            denominators = np.lcm.reduceat(sub_n, sub_starts)
            numerators = np.add.reduceat(sub_c * (np.repeat(denominators, sizes[fast]) // sub_n), sub_starts)
            score[fast] = numerators / denominators
        for group in multi[~fits]:
            rows = slice(int(starts[group]), int(starts[group] + sizes[group]))
            score[group] = _exact_sum(n[rows].tolist(), c[rows].tolist())
    return pa.table(
        {
            "src_note_id": grouped.column("src_note_id").take(pa.array(starts)),
            "dst_note_id": grouped.column("dst_note_id").take(pa.array(starts)),
            "score": pa.array(score, pa.float64()),
            "users": pa.array(users, pa.int64()),
        },
        schema=SCORES,
    )


def _exact_sum(denominators: list[int], counts: list[int]) -> float:
    common = math.lcm(*denominators)
    numerator = sum(count * (common // d) for d, count in zip(denominators, counts))
    return numerator / common  # int / int is correctly rounded in Python


def top_related(scores: pa.Table, up: float, low: float, top_t: int) -> pa.Table:
    """For each src: drop scores above ``up`` or below ``low``, keep the ``top_t`` best (ties: dst ascending)."""
    if scores.num_rows == 0:
        return RELATED.empty_table()
    score = scores.column("score")
    kept = scores.filter(pc.and_(pc.less_equal(score, up), pc.greater_equal(score, low)))
    if kept.num_rows == 0:
        return RELATED.empty_table()
    kept = kept.sort_by([("src_note_id", "ascending"), ("score", "descending"), ("dst_note_id", "ascending")])
    src_codes, _ = _codes(kept.column("src_note_id"))
    starts = _group_starts(src_codes)
    sizes = np.diff(np.concatenate([starts, [len(src_codes)]]))
    rank = np.arange(len(src_codes), dtype=np.int64) - np.repeat(starts, sizes) + 1
    selected = rank <= top_t
    kept = kept.filter(pa.array(selected))
    return pa.table(
        {
            "src_note_id": kept.column("src_note_id"),
            "dst_note_id": kept.column("dst_note_id"),
            "score": kept.column("score"),
            "rank": pa.array(rank[selected], pa.int32()),
        },
        schema=RELATED,
    )
