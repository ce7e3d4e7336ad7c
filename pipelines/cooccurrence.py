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

from i2i.core.schemas import RELATED, SCORES
from pipelines.arrays import INT64_SAFE, group_starts, run_lengths, sort_order, string_ranks, sum_by_rows, unique_rows

NOTE_ID = pa.dictionary(pa.int32(), pa.string())  # ids move between steps dictionary-encoded


def encoded_ids(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its note id columns dictionary-encoded (the form tables take inside the job)."""
    return pa.schema([pa.field(f.name, NOTE_ID, f.nullable) if f.name.endswith("note_id") else f for f in schema])


def dictionary_column(codes: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), pa.int32()), dictionary)


SCORES_ENCODED = encoded_ids(SCORES)
RELATED_ENCODED = encoded_ids(RELATED)
PARTIALS = pa.schema(
    [
        pa.field("src_note_id", NOTE_ID, nullable=False),
        pa.field("dst_note_id", NOTE_ID, nullable=False),
        pa.field("n_u", pa.int64(), nullable=False),  # N_u of the users counted in this row
        pa.field("users", pa.int64(), nullable=False),  # how many users with that N_u
    ]
)


@dataclass
class UserStats:
    """Counts over the users of one table; they add up across shards."""

    users: int = 0
    capped_users: int = 0
    kept_events: int = 0
    capped_events: int = 0  # events dropped by the per-user cap: valid = kept_events + capped_events
    user_pairs: int = 0  # (user, A, B) memberships after the once-per-user rule

    def as_counts(self) -> dict[str, int]:
        return {"users": self.users, "capped_users": self.capped_users,
                "kept_events": self.kept_events, "capped_events": self.capped_events, "user_pairs": self.user_pairs}


@dataclass
class PairBlockLimits:
    """Bounds the memory of one step: candidate pairs are expanded a block of users at a time."""

    max_candidates: int = 4_000_000


def user_pair_partials(events: pa.Table, window_seconds: float, max_events_per_user: int,
                       limits: PairBlockLimits | None = None) -> tuple[pa.Table, UserStats]:
    """From the events of whole users (every event of a user must be in ``events``) to partial sums.

    Returns rows (src, dst, n_u, users): ``users`` users with that N_u are in U(src->dst).
    """
    limits = limits or PairBlockLimits()
    stats = UserStats()
    if events.num_rows == 0:
        return PARTIALS.empty_table(), stats
    ts = events.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    ts = ts.to_numpy().astype(np.int64)
    user_codes, _ = string_ranks(events.column("user_id"))
    note_codes, note_dictionary = string_ranks(events.column("note_id"))
    is_click = pc.equal(events.column("action"), "click").to_numpy(zero_copy_only=False)
    # Order: user, time, note id, action ("click" < "view"): the cap's cut is deterministic.
    ts_offset = ts - ts.min()
    order = sort_order((user_codes, ts_offset, note_codes, (~is_click).astype(np.int64)),
                        (int(user_codes.max()) + 1, int(ts_offset.max()) + 1, int(note_codes.max()) + 1, 2))
    user_codes, note_codes, ts, is_click = user_codes[order], note_codes[order], ts[order], is_click[order]

    # Per-user cap: keep the latest events.
    starts = group_starts(user_codes)
    sizes = np.diff(np.concatenate([starts, [len(user_codes)]]))
    user_rank = np.repeat(np.arange(len(starts), dtype=np.int64), sizes)
    position = np.arange(len(user_codes), dtype=np.int64) - starts[user_rank]
    keep = position >= (sizes - max_events_per_user)[user_rank]
    stats.users = len(starts)
    stats.capped_users = int(np.count_nonzero(sizes > max_events_per_user))
    if not keep.all():
        user_rank, ts, note_codes, is_click = user_rank[keep], ts[keep], note_codes[keep], is_click[keep]
    stats.kept_events = len(user_rank)
    stats.capped_events = len(user_codes) - stats.kept_events
    num_users, num_notes = stats.users, len(note_dictionary)

    # N_u: distinct clicked notes per user.
    (clicked_users, _), _ = unique_rows((user_rank[is_click], note_codes[is_click]), (num_users, num_notes))
    n_u = np.bincount(clicked_users, minlength=num_users).astype(np.int64)
    n_values, n_code_of_user = np.unique(n_u, return_inverse=True)

    # Candidate pairs: for event i, clicks j of the same user with ts_i < ts_j <= ts_i + window.
    window_ms = int(round(window_seconds * 1000))
    base_ts = int(ts.min())
    span = int(ts.max()) - base_ts + window_ms + 1
    pieces: list[tuple[np.ndarray, ...]] = []
    user_starts = group_starts(user_rank)
    user_ends = np.concatenate([user_starts[1:], [len(user_rank)]])
    users_per_block = max(1, min(num_users, INT64_SAFE // span - 1))
    for block_start in range(0, num_users, users_per_block):
        block_end = min(num_users, block_start + users_per_block)
        rows = slice(int(user_starts[block_start]), int(user_ends[block_end - 1]))
        pieces += _block_pairs(user_rank[rows] - block_start, ts[rows] - base_ts, note_codes[rows], is_click[rows],
                               n_code_of_user[block_start:block_end], len(n_values), span, window_ms, num_notes,
                               limits.max_candidates)
    if not pieces:
        return PARTIALS.empty_table(), stats
    src, dst, n_code, users = (np.concatenate([p[i] for p in pieces]) for i in range(4))
    stats.user_pairs = int(users.sum())
    if len(pieces) > 1:  # the same (A, B, N_u) may come from several chunks
        (src, dst, n_code), users = sum_by_rows((src, dst, n_code), (num_notes, num_notes, len(n_values)), users)
    partials = pa.table(
        {
            "src_note_id": dictionary_column(src, note_dictionary),
            "dst_note_id": dictionary_column(dst, note_dictionary),
            "n_u": pa.array(n_values[n_code], pa.int64()),
            "users": pa.array(users.astype(np.int64), pa.int64()),
        },
        schema=PARTIALS,
    )
    return partials, stats


def _block_pairs(users: np.ndarray, ts: np.ndarray, notes: np.ndarray, is_click: np.ndarray, n_code_of_user: np.ndarray,
                 num_n: int, span: int, window_ms: int, num_notes: int, max_candidates: int) -> list[tuple[np.ndarray, ...]]:
    """(A, B, N_u code, users) counts for a block of users whose time keys fit in int64.

    Candidate pairs are expanded at most ``max_candidates`` at a time, on user boundaries, so
    each user's pairs are deduplicated inside one chunk.
    """
    key = users * span + ts  # sorted: events are ordered by user, then time
    click_key = key[is_click]
    click_notes = notes[is_click]
    lo = np.searchsorted(click_key, key, side="right")  # first click strictly later, same user
    hi = np.searchsorted(click_key, key + window_ms, side="right")  # last click within the window
    counts = hi - lo
    out = []
    user_starts = group_starts(users)
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
            src, dst = notes[event_index], click_notes[lo[event_index] + offsets]
            pair_users = users[event_index] - chunk_first_user
            distinct = src != dst
            src, dst, pair_users = src[distinct], dst[distinct], pair_users[distinct]
            n_code = n_code_of_user[pair_users + chunk_first_user]
            # Sorting by (A, B, N_u, user) removes repeated (user, A, B) and leaves each (A, B, N_u) contiguous.
            (src, dst, n_code, _), _ = unique_rows((src, dst, n_code, pair_users),
                                                    (num_notes, num_notes, num_n, chunk_last_user - chunk_first_user))
            groups, sizes = run_lengths((src, dst, n_code))
            out.append((*groups, sizes))
        chunk_first_user = chunk_last_user
    return out


def exact_scores(partials: pa.Table) -> pa.Table:
    """Sums partial rows into (src, dst, score, users); score is the exact rational sum, rounded once.

    Rows come out ordered by (src, dst).
    """
    if partials.num_rows == 0:
        return SCORES_ENCODED.empty_table()
    src_codes, src_dictionary = string_ranks(partials.column("src_note_id"))
    dst_codes, dst_dictionary = string_ranks(partials.column("dst_note_id"))
    n_values, n_codes = np.unique(partials.column("n_u").to_numpy().astype(np.int64), return_inverse=True)
    counts = partials.column("users").to_numpy().astype(np.int64)
    # Rows with the same (src, dst, n) add their user counts; a pair's rows are then contiguous.
    order = sort_order((src_codes, dst_codes, n_codes), (len(src_dictionary), len(dst_dictionary), len(n_values)))
    key_change = np.concatenate([[True], (np.diff(src_codes[order]) != 0) | (np.diff(dst_codes[order]) != 0)
                                 | (np.diff(n_codes[order]) != 0)])
    row_starts = np.flatnonzero(key_change)
    c = np.add.reduceat(counts[order], row_starts)
    n = n_values[n_codes[order][row_starts]]
    src_codes, dst_codes = src_codes[order][row_starts], dst_codes[order][row_starts]
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
        fits = log_bound + np.log2(users[multi].astype(np.float64)) < 52
        fast = multi[fits]
        if len(fast):
            in_fast = np.zeros(len(starts), dtype=bool)
            in_fast[fast] = True
            rows_mask = np.repeat(in_fast, sizes)
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
            "src_note_id": dictionary_column(src_codes[starts], src_dictionary),
            "dst_note_id": dictionary_column(dst_codes[starts], dst_dictionary),
            "score": pa.array(score, pa.float64()),
            "users": pa.array(users, pa.int64()),
        },
        schema=SCORES_ENCODED,
    )


def _exact_sum(denominators: list[int], counts: list[int]) -> float:
    common = math.lcm(*denominators)
    numerator = sum(count * (common // d) for d, count in zip(denominators, counts))
    return numerator / common  # int / int is correctly rounded in Python


def top_related(scores: pa.Table, up: float, low: float, top_t: int) -> pa.Table:
    """For each src: drop scores above ``up`` or below ``low``, keep the ``top_t`` best (ties: dst ascending)."""
    if scores.num_rows == 0:
        return RELATED_ENCODED.empty_table()
    score = scores.column("score")
    kept = scores.filter(pc.and_(pc.less_equal(score, up), pc.greater_equal(score, low)))
    if kept.num_rows == 0:
        return RELATED_ENCODED.empty_table()
    src_codes, src_dictionary = string_ranks(kept.column("src_note_id"))
    dst_codes, dst_dictionary = string_ranks(kept.column("dst_note_id"))
    distinct_scores, score_codes = np.unique(-kept.column("score").to_numpy(), return_inverse=True)
    order = sort_order((src_codes, score_codes, dst_codes),
                        (int(src_codes.max()) + 1, len(distinct_scores), int(dst_codes.max()) + 1))
    src_sorted = src_codes[order]
    starts = group_starts(src_sorted)
    sizes = np.diff(np.concatenate([starts, [len(src_sorted)]]))
    rank = np.arange(len(src_sorted), dtype=np.int64) - np.repeat(starts, sizes) + 1
    selected = rank <= top_t
    chosen = order[selected]
    return pa.table(
        {
            "src_note_id": dictionary_column(src_codes[chosen], src_dictionary),
            "dst_note_id": dictionary_column(dst_codes[chosen], dst_dictionary),
            "score": kept.column("score").take(pa.array(chosen)),
            "rank": pa.array(rank[selected], pa.int32()),
        },
        schema=RELATED_ENCODED,
    )
