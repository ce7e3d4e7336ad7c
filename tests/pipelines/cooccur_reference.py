"""Helpers for the Beam job tests: small event tables written as Parquet or JSON Lines, and an
independent computation of paper eq. 2 with exact fractions to compare the jobs against."""
from __future__ import annotations

import json
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from i2i.core.schemas import EVENTS

BEAM_ARGS = ["--runner=DirectRunner"]
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in epoch ms


def events_table(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    """(user, note, action, ts ms) rows as an events table."""
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "note_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": pa.array([r[3] for r in rows], pa.int64()).cast(EVENTS.field("ts").type),
        },
        schema=EVENTS,
    )


def write_parquet_events(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(events_table(rows), path)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def reference_scores(rows, window_seconds: float = 86400, cap: int = 1000) -> dict[tuple[str, str], tuple[float, int]]:
    """Eq. 2 straight from the definition: every (event, click) pair of a user, exact fractions."""
    by_user = defaultdict(list)
    for user, note, action, ts in rows:
        by_user[user].append((ts, note, action))
    members: dict[tuple[str, str], set] = defaultdict(set)
    clicked: dict[str, int] = {}
    for user, events in by_user.items():
        events = sorted(events)[-cap:]
        clicked[user] = len({note for _, note, action in events if action == "click"})
        for t1, a, _ in events:
            for t2, b, action in events:
                if action == "click" and t1 < t2 <= t1 + window_seconds * 1000 and a != b:
                    members[(a, b)].add(user)
    return {pair: (float(sum(Fraction(1, clicked[u]) for u in users)), len(users)) for pair, users in members.items()}


def reference_related(scores: dict, up: float = 30, low: float = 0.01, top_t: int = 3) -> list[tuple[str, str, float, int]]:
    by_src = defaultdict(list)
    for (a, b), (score, _) in scores.items():
        if low <= score <= up:
            by_src[a].append((-score, b))
    out = []
    for a in sorted(by_src):
        for rank, (neg, b) in enumerate(sorted(by_src[a])[:top_t], start=1):
            out.append((a, b, -neg, rank))
    return out


def scores_dict(table: pa.Table) -> dict[tuple[str, str], tuple[float, int]]:
    return {(r["src_note_id"], r["dst_note_id"]): (r["score"], r["users"]) for r in table.to_pylist()}


def related_rows(table: pa.Table) -> list[tuple[str, str, float, int]]:
    rows = [(r["src_note_id"], r["dst_note_id"], r["score"], r["rank"]) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r[0], r[3]))
