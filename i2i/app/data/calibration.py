"""Calibration figures of a generated fashion-notes set: how related its co-occurring pairs are.

The related pairs are computed as the Beam chain computes them (``i2i cooccur`` then ``i2i pairs``:
paper eq. 2, the up/low filter, top-t per note, one row per unordered pair, test = both notes
published in the test period), but in one DuckDB query, which takes seconds. The figures: the
share of pairs whose notes share the product, the category and the colour (beside the chance
level of two random notes), and the oracle's Recall@100 on the test pairs against the test pool.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from embedding.baselines.oracle import attribute_codes, oracle_ranks
from pipelines.transforms import CooccurConfig

# Paper eq. 2 as CONTRACTS.md states it; {events} is a relation (a registered table or read_parquet(...)).
COOCCUR_SQL = """
WITH ranked AS (
  SELECT user_id, note_id, action, epoch_ms(ts) AS t,
         row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, note_id DESC, action DESC) AS rn
  FROM {events}
), kept AS (SELECT user_id, note_id, action, t FROM ranked WHERE rn <= {cap}),
clicks AS (SELECT user_id, note_id, t FROM kept WHERE action = 'click'),
n_u AS (SELECT user_id, count(DISTINCT note_id) AS n FROM clicks GROUP BY user_id),
members AS (
  SELECT DISTINCT a.user_id, a.note_id AS src_note_id, c.note_id AS dst_note_id
  FROM kept a JOIN clicks c
    ON a.user_id = c.user_id AND c.t > a.t AND c.t <= a.t + {window_ms}
  WHERE a.note_id <> c.note_id
)
SELECT src_note_id, dst_note_id, sum(1.0 / n) AS score, count(*) AS users
FROM members JOIN n_u USING (user_id)
GROUP BY src_note_id, dst_note_id
"""

# related (top-t after the up/low filter, ties by dst ascending), then one row per unordered pair:
# the higher score wins, on a tie the row whose query id is smaller (pipelines.pair_table.drop_symmetric)
PAIRS_SQL = """
WITH scores AS ({scores}),
related AS (
  SELECT src_note_id, dst_note_id, score FROM scores
  WHERE score <= {up} AND score >= {low}
  QUALIFY row_number() OVER (PARTITION BY src_note_id ORDER BY score DESC, dst_note_id ASC) <= {top_t}
)
SELECT src_note_id AS query_note_id, dst_note_id AS target_note_id, score FROM related
QUALIFY row_number() OVER (
  PARTITION BY least(src_note_id, dst_note_id), greatest(src_note_id, dst_note_id)
  ORDER BY score DESC, src_note_id > dst_note_id) = 1
ORDER BY query_note_id, target_note_id
"""


def related_pairs(events: pa.Table, params: CooccurConfig = CooccurConfig()) -> pa.Table:
    """(query_note_id, target_note_id, score): one row per unordered related pair, as ``i2i pairs`` keeps them."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.register("events_table", events)
        scores = COOCCUR_SQL.format(events="events_table", cap=params.max_events_per_user,
                                    window_ms=round(params.window_seconds * 1000))
        sql = PAIRS_SQL.format(scores=scores, up=params.up, low=params.low, top_t=params.top_t)
        result = con.sql(sql).arrow()
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
    finally:
        con.close()


def chance_share(values: np.ndarray) -> float:
    """Probability that two notes drawn at random share the value."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float((p * p).sum())


def calibrate(notes: pa.Table, events: pa.Table, attributes: pa.Table, test_since_ms: int,
              params: CooccurConfig = CooccurConfig()) -> dict:
    """Calibration figures (module docstring) of one dataset; ``attributes`` is its ``_attributes`` table."""
    pairs = related_pairs(events, params)
    note_ids = notes.column("note_id").to_pylist()
    position = {note_id: i for i, note_id in enumerate(note_ids)}
    published = notes.column("published_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
    query = np.array([position.get(n, -1) for n in pairs.column("query_note_id").to_pylist()], dtype=np.int64)
    target = np.array([position.get(n, -1) for n in pairs.column("target_note_id").to_pylist()], dtype=np.int64)
    present = (query >= 0) & (target >= 0)
    query, target = query[present], target[present]
    is_test = published >= test_since_ms
    test = is_test[query] & is_test[target]
    train = ~is_test[query] & ~is_test[target]

    by_id = {c: attributes.column(c).to_pylist() for c in ("note_id", "product_id", "category", "colour", "short")}
    row = {note_id: i for i, note_id in enumerate(by_id["note_id"])}
    order = np.array([row[n] for n in note_ids], dtype=np.int64)
    columns = {c: np.asarray(by_id[c], dtype=object)[order] for c in ("product_id", "category", "colour")}
    short = np.asarray(by_id["short"], dtype=bool)[order]

    def shares(mask: np.ndarray) -> dict:
        q, t = query[mask], target[mask]
        return {f"same_{name}": round(float(np.mean(values[q] == values[t])), 4) if len(q) else None
                for name, values in (("product", columns["product_id"]), ("category", columns["category"]),
                                     ("colour", columns["colour"]))}

    pool = np.flatnonzero(is_test)
    pool_position = np.full(len(note_ids), -1, dtype=np.int64)
    pool_position[pool] = np.arange(len(pool))
    codes = attribute_codes(attributes, [note_ids[i] for i in pool])
    ranks = oracle_ranks(codes, pool_position[query[test]], pool_position[target[test]])
    short_query = short[query[test]]
    short_target = short[target[test]]

    def recall(mask: np.ndarray, k: int = 100) -> float | None:
        return round(float(np.mean(ranks[mask] <= k)), 4) if mask.any() else None

    return {
        "pairs": {"related_unordered": int(present.sum()), "train_val": int(train.sum()), "test": int(test.sum()),
                  "mixed_dropped": int(len(query) - train.sum() - test.sum()),
                  "test_short_query": int(short_query.sum()), "test_short_target": int(short_target.sum())},
        "test_pool_notes": int(len(pool)),
        "share_all_pairs": shares(np.ones(len(query), dtype=bool)),
        "share_test_pairs": shares(test),
        "chance": {"same_product": round(chance_share(columns["product_id"]), 5),
                   "same_category": round(chance_share(columns["category"]), 4),
                   "same_colour": round(chance_share(columns["colour"]), 4)},
        "oracle_recall_at_100": {"all": recall(np.ones(len(ranks), dtype=bool)), "short_query": recall(short_query),
                                 "short_target": recall(short_target)},
        "cooccur": {"window_seconds": params.window_seconds, "up": params.up, "low": params.low, "top_t": params.top_t,
                    "max_events_per_user": params.max_events_per_user},
    }


def format_calibration(figures: dict) -> str:
    """The figures as a few lines for the terminal."""
    pairs, share, chance = figures["pairs"], figures["share_test_pairs"], figures["chance"]
    oracle = figures["oracle_recall_at_100"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return "\n".join([
        f"calibration: {pairs['related_unordered']} related pairs ({pairs['train_val']} train/val, {pairs['test']} test, "
        f"{pairs['test_short_query']} short-query test); test pool {figures['test_pool_notes']} notes",
        f"  test pairs sharing product {fmt(share['same_product'])} (chance {chance['same_product']:.4f}), "
        f"category {fmt(share['same_category'])} (chance {chance['same_category']:.3f}), "
        f"colour {fmt(share['same_colour'])} (chance {chance['same_colour']:.3f})",
        f"  oracle R@100 on test pairs: all {fmt(oracle['all'])}, short query {fmt(oracle['short_query'])}, "
        f"short target {fmt(oracle['short_target'])}",
    ])
