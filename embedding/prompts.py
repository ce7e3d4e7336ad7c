"""Note compression prompts of NoteLLM-2 (basic, section 2.2; mICL, section 3) rendered to token ids.

The prompt is assembled from token-id pieces rather than one string so that the ``<IMG>``
placeholder expands into exactly ``L_c`` positions (later overwritten by the connector's visual
embeddings) and the note's own text can be capped in tokens without cutting the template.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from embedding.config import PromptConfig

IMG_TOKEN = "<IMG>"
IMG_EMB_TOKEN = "<IMG_EMB>"
SPECIAL_TOKENS = (IMG_TOKEN, IMG_EMB_TOKEN)

# Template pieces; NOTE stands for "'title': t, 'topic': tp, 'content': ct".
BASIC_PREFIX = "Note content: {'image': "
BASIC_MIDDLE = ", "
SUFFIX = "}. Compress this note into one word:"
TEXT_PREFIX = "Note content: {"
MICL_PREFIX = "Note content: {'image': "
MICL_IMAGE_SUFFIX = "}, Compress this note into one word: \""
MICL_TEXT_PREFIX = "\". Note content: {"
MICL_SUFFIX = "}. Compress this note into one word: \""


def truncate_words(text: str | None, max_words: int) -> str:
    words = (text or "").split()
    return " ".join(words[:max_words])


def topics_text(topics: Sequence[str] | None) -> str:
    return ", ".join(t.strip() for t in (topics or []) if t and t.strip())


def note_fields_text(note: dict[str, Any], config: PromptConfig) -> str:
    """The note's fields as the paper's JSON-like body, with title and content truncated in words."""
    title = truncate_words(note.get("title"), config.title_words)
    content = truncate_words(note.get("content"), config.content_words)
    return f"'title': {title}, 'topic': {topics_text(note.get('topics'))}, 'content': {content}"


def note_plain_text(note: dict[str, Any]) -> str:
    """Untruncated title, topics and content: what a note's token length is measured on."""
    parts = [note.get("title") or "", " ".join(note.get("topics") or []), note.get("content") or ""]
    return " ".join(p for p in parts if p)


def render_text(note: dict[str, Any], variant: str, config: PromptConfig) -> str:
    """The prompt as text (one ``<IMG>`` placeholder), for display and documentation."""
    body = note_fields_text(note, config)
    if variant in ("micl", "notellm2"):
        return (f"{MICL_PREFIX}{IMG_TOKEN}{MICL_IMAGE_SUFFIX}{IMG_EMB_TOKEN}{MICL_TEXT_PREFIX}"
                f"{body}{MICL_SUFFIX}")
    if variant in ("basic", "late_fusion"):
        return f"{BASIC_PREFIX}{IMG_TOKEN}{BASIC_MIDDLE}{body}{SUFFIX}"
    return f"{TEXT_PREFIX}{body}{SUFFIX}"


@dataclass
class PromptIds:
    """Token ids of one prompt; ``image_start`` is where L_c visual positions begin (None = no image)."""

    ids: list[int]
    image_start: int | None
    img_emb_position: int | None  # index of <IMG_EMB> (mICL only)


class PromptBuilder:
    """Turns notes into prompt token ids for one variant and tokenizer."""

    def __init__(self, tokenizer, variant: str, config: PromptConfig, num_queries: int):
        self.tokenizer = tokenizer
        self.variant = variant
        self.config = config
        self.num_queries = num_queries
        self.img_id = tokenizer.convert_tokens_to_ids(IMG_TOKEN)
        self.img_emb_id = tokenizer.convert_tokens_to_ids(IMG_EMB_TOKEN)
        self._pieces = {text: self._encode(text) for text in (
            BASIC_PREFIX, BASIC_MIDDLE, SUFFIX, TEXT_PREFIX, MICL_IMAGE_SUFFIX, MICL_TEXT_PREFIX, MICL_SUFFIX)}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def note_ids(self, note: dict[str, Any]) -> list[int]:
        return self._encode(note_fields_text(note, self.config))[: self.config.max_note_tokens]

    def token_length(self, note: dict[str, Any]) -> int:
        return len(self._encode(note_plain_text(note)))

    def build(self, note: dict[str, Any]) -> PromptIds:
        p = self._pieces
        body = self.note_ids(note)
        image = [self.img_id] * self.num_queries
        if self.variant in ("micl", "notellm2"):
            head = p[BASIC_PREFIX]
            ids = head + image + p[MICL_IMAGE_SUFFIX]
            img_emb_position = len(ids)
            ids = ids + [self.img_emb_id] + p[MICL_TEXT_PREFIX] + body + p[MICL_SUFFIX]
            return PromptIds(ids, len(head), img_emb_position)
        if self.variant in ("basic", "late_fusion"):
            head = p[BASIC_PREFIX]
            return PromptIds(head + image + p[BASIC_MIDDLE] + body + p[SUFFIX], len(head), None)
        return PromptIds(p[TEXT_PREFIX] + body + p[SUFFIX], None, None)
