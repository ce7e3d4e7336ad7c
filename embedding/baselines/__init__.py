"""Baselines that `i2i eval --baseline NAME` ranks through the same evaluation as checkpoints."""
from __future__ import annotations

from typing import Mapping, Sequence

from embedding.evaluation import DenseScorer, Scorer
from i2i.core.errors import InputError

BASELINES = ("bm25", "minilm", "image")


def build_scorer(name: str, notes: Sequence[Mapping], device: str | None = None, progress: bool = False) -> Scorer:
    """A scorer over the pool ``notes`` for the named baseline."""
    if name == "bm25":
        from embedding.baselines.bm25 import BM25Scorer

        return BM25Scorer(notes, progress=progress)
    if name == "minilm":
        from embedding.baselines.minilm import MiniLMEncoder

        return DenseScorer(MiniLMEncoder(device=device).encode_notes(notes, progress=progress), device)
    if name == "image":
        from embedding.baselines.image import ImageFeatureEncoder

        return DenseScorer(ImageFeatureEncoder(device=device).encode_notes(notes, progress=progress), device)
    raise InputError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINES)}")
