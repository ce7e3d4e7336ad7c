"""Recall channels of a replay: what turns a user's history into a ranked list of notes.

Embedding channels go through the real recall server (gRPC), exactly as online traffic would.
The co-occurrence and popularity channels are computed here from day D-1 data; random is the floor.
"""
from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence as SequenceABC
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from i2i.app.replay.scoring import UserCase

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str
    kind: str

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        """Ranked note ids per user id, at most ``k`` each, history notes left out."""


@dataclass
class ServerChannel:
    """Recalls through a running recall server (an ``i2i.testing.serving.ServerProcess``).

    ``workers`` requests are in flight at once, as concurrent users would send them; each answer
    depends on its own request only, so the lists are the same as one request at a time."""

    name: str
    server: object
    kind: str = "embedding (server)"
    workers: int = 1
    failed: int = 0
    missing_history: int = 0
    versions: set[tuple[str, str]] = field(default_factory=set)

    def _one(self, case: UserCase, k: int):
        try:
            return self.server.recall(case.history, k, user_id=case.user_id, timeout=30.0), None
        except grpc.RpcError as exc:
            return None, exc

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            answers = pool.map(lambda case: self._one(case, k), cases)
            for case, (response, error) in zip(cases, answers):
                if error is not None:
                    self.failed += 1
                    log.warning("%s: recall for user %s failed: %s", self.name, case.user_id, error.code())
                    out[case.user_id] = []
                    continue
                self.missing_history += len(response.missing_history)
                self.versions.add((response.index_version, response.model_version))
                out[case.user_id] = [note.note_id for note in response.notes]
        return out


def rank_scores(scores: dict[str, float], k: int) -> list[str]:
    """The ``k`` best notes by score, ties broken by note id (deterministic)."""
    return [note for note, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]


@dataclass
class CooccurrenceChannel:
    """Item-based scoring as SAR does it: score(j) = sum over history notes i of sim(i, j).

    ``sim`` is the co-occurrence score of the ``related`` table (paper eq. 2); notes nobody
    clicked before day D have no row, so this channel cannot recall them.
    """

    related: pa.Table
    allowed: set[str]
    name: str = "co-occurrence (SAR)"
    kind: str = "item-to-item (related table)"

    def __post_init__(self) -> None:
        self.neighbours: dict[str, list[tuple[str, float]]] = defaultdict(list)
        columns = [self.related.column(c).to_pylist() for c in ("src_note_id", "dst_note_id", "score")]
        for src, dst, score in zip(*columns):
            if dst in self.allowed:
                self.neighbours[src].append((dst, float(score)))

    def scores(self, history: Iterable[str]) -> dict[str, float]:
        history = list(history)
        seen = set(history)
        scores: dict[str, float] = defaultdict(float)
        for note in history:
            for dst, score in self.neighbours.get(note, ()):
                if dst not in seen:
                    scores[dst] += score
        return dict(scores)

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        return {case.user_id: rank_scores(self.scores(case.history), k) for case in cases}


@dataclass
class PopularityChannel:
    """The most clicked notes of the last ``days`` days before D, the same list for everyone."""

    events_before: pa.Table
    allowed: set[str]
    days: int = 7
    name: str = "popularity"
    kind: str = "popularity (clicks, last 7 days)"

    def __post_init__(self) -> None:
        events = self.events_before.filter(pc.equal(self.events_before.column("action"), "click"))
        if events.num_rows:
            latest = pc.max(events.column("ts")).as_py()
            import datetime as dt

            since = pa.scalar(latest - dt.timedelta(days=self.days), events.column("ts").type)
            events = events.filter(pc.greater(events.column("ts"), since))
        counts = Counter(note for note in events.column("note_id").to_pylist() if note in self.allowed)
        self.ranked = rank_scores(dict(counts), len(counts))
        self.kind = f"popularity (clicks, last {self.days} days)"

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        out = {}
        for case in cases:  # the first k notes outside the history, without walking the whole ranking
            seen = set(case.history)
            out[case.user_id] = list(islice((note for note in self.ranked if note not in seen), k))
        return out


class Remaining(SequenceABC):
    """``items`` less the entries at ``skipped`` positions, without copying ``items``: a view that
    ``random.sample`` draws from exactly as from the list it stands for."""

    def __init__(self, items: Sequence[str], skipped: Iterable[int]) -> None:
        self.items = items
        self.skipped = sorted(set(skipped))

    def __len__(self) -> int:
        return len(self.items) - len(self.skipped)

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        for position in self.skipped:  # each skipped position at or before the target shifts it by one
            if position > index:
                break
            index += 1
        return self.items[index]

    def __iter__(self) -> Iterator[str]:
        skipped = set(self.skipped)
        return (item for position, item in enumerate(self.items) if position not in skipped)


@dataclass
class RandomChannel:
    """Notes drawn uniformly from day D's catalogue: the floor every channel must beat."""

    catalogue: Sequence[str]
    seed: int = 0
    name: str = "random"
    kind: str = "floor"

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        rng = random.Random(self.seed)
        positions: dict[str, list[int]] = defaultdict(list)
        for position, note in enumerate(self.catalogue):
            positions[note].append(position)
        out = {}
        for case in cases:  # the catalogue less the user's history, as a view rather than a copy per user
            pool = Remaining(self.catalogue, (p for note in set(case.history) for p in positions.get(note, ())))
            out[case.user_id] = rng.sample(pool, min(k, len(pool)))
        return out


@dataclass
class OracleChannel:
    """The user's own day D clicks first: the ceiling (below 1 only where a user clicked more than k notes)."""

    name: str = "oracle"
    kind: str = "ceiling"

    def recall(self, cases: Sequence[UserCase], k: int) -> dict[str, list[str]]:
        return {case.user_id: sorted(case.targets)[:k] for case in cases}


def cooccur_related(scores: Path, top_t: int) -> pa.Table:
    """The co-occurrence channel's ``related`` table: the day D-1 ``scores`` with the co-occurrence job's
    own eq. 2 bounds (``CooccurConfig``) and ``top_t`` related notes per note instead of its 3."""
    from i2i.core.io import read_table
    from pipelines.cooccurrence import top_related
    from pipelines.transforms import CooccurConfig

    defaults = CooccurConfig()
    return top_related(read_table(scores), up=defaults.up, low=defaults.low, top_t=top_t)


def local_channels(catalogue: Sequence[str], events_before: pa.Table, related: pa.Table | None,
                   names: Sequence[str] = ("cooccur", "popularity", "random", "oracle"), popularity_days: int = 7,
                   seed: int = 0) -> list:
    """The channels computed in this process, in table order, for day D's ``catalogue``."""
    allowed = set(catalogue)
    made = {"cooccur": lambda: CooccurrenceChannel(related, allowed),
            "popularity": lambda: PopularityChannel(events_before, allowed, popularity_days),
            "random": lambda: RandomChannel(list(catalogue), seed), "oracle": lambda: OracleChannel()}
    return [made[name]() for name in ("cooccur", "popularity", "random", "oracle") if name in names]
