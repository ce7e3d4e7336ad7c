"""Token lengths of notes, which decide the short and long pair groups of the evaluation.

A checkpoint counts with its own tokenizer (``NoteEncoder.token_length``). Baselines and embedding
tables have none, so they count with the SmolLM2-135M tokenizer from the offline GGUF file (the
LLM of the offline configuration) and fall back to whitespace words when it is not installed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from embedding.baselines.text import note_text
from i2i.core.errors import InputError

log = logging.getLogger(__name__)

@dataclass
class TokenCounter:
    """Counts the tokens of a note's text; ``name`` is reported next to the results."""

    name: str
    count: Callable[[Mapping], int]

    def lengths(self, notes: Sequence[Mapping]) -> np.ndarray:
        return np.array([self.count(note) for note in notes], dtype=np.int64)


def whitespace_counter() -> TokenCounter:
    return TokenCounter("whitespace words", lambda note: len(note_text(note).split()))


@lru_cache(maxsize=1)
def smollm2_tokenizer():
    """The SmolLM2 tokenizer read from the GGUF file's metadata, or None when unavailable.

    The file is the one training loads for ``llm.path = "smollm2-135m"`` (one helper picks it), so
    a baseline counts with the same tokenizer as the offline model.
    """
    from embedding.backbones import smollm2_gguf_path

    try:
        path = Path(smollm2_gguf_path())
    except InputError:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # a broken or unreadable file: fall back, and say so
        log.warning("cannot read the SmolLM2 tokenizer from %s (%s); counting whitespace words", path, exc)
        return None


def smollm2_counter() -> TokenCounter | None:
    tokenizer = smollm2_tokenizer()
    if tokenizer is None:
        return None
    return TokenCounter(
        "SmolLM2-135M tokens",
        lambda note: len(tokenizer(note_text(note), add_special_tokens=False)["input_ids"]),
    )


def default_counter() -> TokenCounter:
    """SmolLM2 tokens when the offline weights are installed, else whitespace words."""
    return smollm2_counter() or whitespace_counter()


def encoder_counter(encoder) -> TokenCounter:
    """The checkpoint's own tokenizer, through ``NoteEncoder.token_length``."""
    return TokenCounter(f"{getattr(encoder, 'model_version', 'checkpoint')} tokenizer", encoder.token_length)
