"""The floor and the ceiling of every results table: a random ranking and the latent-attribute oracle.

``random`` gives every pool note an independent uniform score per query (seeded by the seed and the
query's note id, so a query's ranking does not depend on chunking or on the other queries): its
Recall@k is about k / candidates. ``oracle`` ranks by the latent attributes that generated the
behaviour (``embedding.baselines.oracle``), read from a fashion-notes ``_attributes/`` table.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np
import torch

from embedding.baselines.oracle import attribute_codes, oracle_scores


class RandomScorer:
    def __init__(self, notes: Sequence[Mapping], seed: int = 0) -> None:
        self.pool_size = len(notes)
        self.keys = [int.from_bytes(hashlib.blake2b(str(n["note_id"]).encode(), digest_size=8).digest(), "big")
                     for n in notes]
        self.seed = seed

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        rows = np.empty((len(query_positions), self.pool_size), dtype=np.float32)
        for row, position in enumerate(query_positions):
            rows[row] = np.random.default_rng([self.seed, self.keys[int(position)]]).random(self.pool_size)
        return torch.from_numpy(rows)


class OracleScorer:
    def __init__(self, notes: Sequence[Mapping], attributes) -> None:
        self.codes = attribute_codes(attributes, [n["note_id"] for n in notes])
        self.pool_size = len(notes)

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(oracle_scores(self.codes, query_positions))
