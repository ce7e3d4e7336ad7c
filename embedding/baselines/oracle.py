"""The oracle: a ranking by the latent attributes that generated the behaviour (fashion-notes ``_attributes/``).

Its score is nested levels of likeness: same product (4) > same family, i.e. category, colour and
style (3) > same category and colour (2) > same category (1) > anything else (0). It is the
ceiling a representation could reach if it recovered the latent attributes exactly; ties are
ranked before the target as in every evaluation, so a target of the same family but another
product ranks behind the whole family.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from i2i.core.errors import InputError

ORACLE_COLUMNS = ("note_id", "product_id", "category", "colour", "style")


def attribute_codes(attributes: pa.Table, note_ids: Sequence[str]) -> np.ndarray:
    """(len(note_ids), 4) integer codes: product, family, category+colour, category; notes without
    attributes get codes that match nothing (-1 - position)."""
    missing = [c for c in ORACLE_COLUMNS if c not in attributes.column_names]
    if missing:
        raise InputError(f"attributes table lacks columns {missing} (expected fashion-notes _attributes/)")
    columns = {c: attributes.column(c).to_pylist() for c in ORACLE_COLUMNS}
    row = {note_id: i for i, note_id in enumerate(columns["note_id"])}
    keys = [
        columns["product_id"],
        [f"{a}|{b}|{c}" for a, b, c in zip(columns["category"], columns["colour"], columns["style"])],
        [f"{a}|{b}" for a, b in zip(columns["category"], columns["colour"])],
        columns["category"],
    ]
    codes = np.empty((len(note_ids), len(keys)), dtype=np.int64)
    for j, values in enumerate(keys):
        _, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        for i, note_id in enumerate(note_ids):
            r = row.get(note_id)
            codes[i, j] = inverse[r] if r is not None else -1 - i
    return codes


def oracle_scores(codes: np.ndarray, query_positions: np.ndarray) -> np.ndarray:
    """(len(query_positions), len(codes)) float32 scores: the deepest level of likeness shared."""
    queries = codes[np.asarray(query_positions, dtype=np.int64)]
    scores = np.zeros((len(queries), len(codes)), dtype=np.float32)
    for level, j in enumerate(reversed(range(codes.shape[1])), start=1):  # category first, product last
        scores = np.where(queries[:, None, j] == codes[None, :, j], np.float32(level), scores)
    return scores


def oracle_ranks(codes: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based target ranks under the oracle without scoring the whole pool: with nested levels the
    notes at or above the target's level are exactly the pool notes sharing that level's group."""
    queries, targets = np.asarray(queries, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    ranks = np.full(len(queries), len(codes) - 1, dtype=np.int64)  # level 0: every other note ties
    done = np.zeros(len(queries), dtype=bool)
    for j in range(codes.shape[1]):  # product first: the deepest shared level decides
        _, inverse, counts = np.unique(codes[:, j], return_inverse=True, return_counts=True)
        shared = ~done & (codes[queries, j] == codes[targets, j])
        ranks[shared] = counts[inverse[queries[shared]]] - 1  # the group without the query itself
        done |= shared
    return ranks
