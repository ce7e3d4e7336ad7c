"""The text of a note as the text baselines and token counts see it: title, topics and content."""
from __future__ import annotations

from typing import Mapping


def note_text(note: Mapping) -> str:
    """Title, topics and content joined by newlines; missing fields count as empty."""
    topics = note.get("topics") or []
    parts = [note.get("title") or "", " ".join(t for t in topics if t), note.get("content") or ""]
    return "\n".join(part for part in parts if part)
