"""Baselines that `i2i eval --baseline NAME` ranks through the same evaluation as checkpoints."""
from __future__ import annotations

from typing import Mapping, Sequence

from embedding.evaluation import DenseScorer, Scorer
from i2i.core.errors import InputError

BASELINES = ("bm25", "minilm", "image", "random", "oracle")


def build_scorer(name: str, notes: Sequence[Mapping], device: str | None = None, progress: bool = False,
                 seed: int = 0, attributes=None) -> Scorer:
    """A scorer over the pool ``notes`` for the named baseline (``oracle`` needs the ``_attributes`` table)."""
    if name == "bm25":
        from embedding.baselines.bm25 import BM25Scorer

        return BM25Scorer(notes, progress=progress)
    if name == "minilm":
        from embedding.baselines.minilm import MiniLMEncoder

        return DenseScorer(MiniLMEncoder(device=device).encode_notes(notes, progress=progress), device)
    if name == "image":
        from embedding.baselines.image import ImageFeatureEncoder

        return DenseScorer(ImageFeatureEncoder(device=device).encode_notes(notes, progress=progress), device)
    if name == "random":
        from embedding.baselines.reference import RandomScorer

        return RandomScorer(notes, seed)
    if name == "oracle":
        from embedding.baselines.reference import OracleScorer

        if attributes is None:
            raise InputError("the oracle needs the dataset's latent attributes: pass --attributes DIR")
        return OracleScorer(notes, attributes)
    raise InputError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINES)}")
