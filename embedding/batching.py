"""Training pairs: cleaning (bad pairs become dead letters) and batches that never hold a note twice.

A note appearing twice in one batch would be its own in-batch negative (a false negative for eq. 1),
so a pair that would repeat a note is deferred to a later batch instead.
"""
from __future__ import annotations

import json
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa

Pair = tuple[str, str]


@dataclass
class PairSet:
    pairs: list[Pair]
    dead_letters: list[dict] = field(default_factory=list)  # rows of the DEAD_LETTER schema

    @property
    def reasons(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.dead_letters))


def select_pairs(pairs: pa.Table, note_ids: set[str], split: str, source: str = "pairs") -> PairSet:
    """Pairs of one split whose notes both exist and differ; the others become dead letters."""
    result = PairSet([])
    for row in pairs.filter(pa.compute.equal(pairs["split"], split)).to_pylist():
        query, target = row["query_note_id"], row["target_note_id"]
        reason = None
        if query == target:
            reason = "query and target are the same note"
        elif query not in note_ids:
            reason = "query note not in the notes table"
        elif target not in note_ids:
            reason = "target note not in the notes table"
        if reason:
            result.dead_letters.append({"raw": json.dumps(row, default=str), "reason": reason, "source": source})
        else:
            result.pairs.append((query, target))
    return result


def one_epoch(pairs: list[Pair], batch_size: int, rng: random.Random, allow_partial: bool) -> Iterator[list[Pair]]:
    """Shuffled batches of ``batch_size`` pairs with distinct notes; conflicting pairs wait for a later batch."""
    order = list(pairs)
    rng.shuffle(order)
    source, deferred = iter(order), deque()
    exhausted = False
    while True:
        batch: list[Pair] = []
        seen: set[str] = set()

        def offer(pair: Pair) -> bool:
            if pair[0] in seen or pair[1] in seen:
                return False
            batch.append(pair)
            seen.update(pair)
            return True

        for _ in range(len(deferred)):
            if len(batch) == batch_size:
                break
            pair = deferred.popleft()
            if not offer(pair):
                deferred.append(pair)
        while len(batch) < batch_size and not exhausted:
            pair = next(source, None)
            if pair is None:
                exhausted = True
            elif not offer(pair):
                deferred.append(pair)
        if not batch:
            return
        if len(batch) == batch_size or (allow_partial and len(batch) >= 2):
            yield batch
        # otherwise a last, too-small batch is dropped; every round consumes pairs, so this ends


def pair_batches(pairs: list[Pair], batch_size: int, seed: int = 0, allow_partial: bool = True,
                 shard: tuple[int, int] = (0, 1)) -> Iterator[list[Pair]]:
    """Endless batches over reshuffled epochs; ``shard`` = (rank, world) gives each process its own batches."""
    if not pairs:
        raise ValueError("no pairs to batch")
    rank, world = shard
    epoch, index, produced = 0, 0, False
    while True:
        rng = random.Random(seed * 1_000_003 + epoch)
        for batch in one_epoch(pairs, batch_size, rng, allow_partial):
            if index % world == rank:
                produced = True
                yield batch
            index += 1
        epoch += 1
        if not produced and epoch > 1:
            raise ValueError(f"pairs cannot fill a batch of {batch_size} distinct-note pairs")
