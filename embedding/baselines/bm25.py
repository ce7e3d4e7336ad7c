"""BM25 baseline (bm25s): each query note's text scored against the text of every pool note."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from embedding.baselines.text import note_text


class BM25Scorer:
    """Lexical relevance of query notes against the pool; a ``Scorer`` for ``embedding.evaluation``.

    The index is built over the pool itself, so the query note's own text is part of the corpus
    statistics, as in a real retrieval system where the query note is already published.
    """

    def __init__(self, notes: Sequence[Mapping], stopwords: str | None = "en", k1: float = 1.5, b: float = 0.75,
                 progress: bool = False) -> None:
        import bm25s

        texts = [note_text(note) for note in notes]
        self.tokens: list[list[str]] = bm25s.tokenize(
            texts, stopwords=stopwords, return_ids=False, show_progress=progress
        )
        self.pool_size = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        # bm25s refuses an empty vocabulary; a pool of empty notes scores 0 everywhere instead
        self.empty = not any(self.tokens)
        if not self.empty:
            self.retriever.index(self.tokens, show_progress=progress)

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        rows = np.zeros((len(query_positions), self.pool_size), dtype=np.float32)
        if not self.empty:
            for row, position in enumerate(query_positions):
                query = self.tokens[int(position)]
                if query:
                    rows[row] = self.retriever.get_scores(query)
        return torch.from_numpy(rows)
