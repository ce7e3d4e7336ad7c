"""Structured logs: one JSON object per event, so log shippers can index the fields."""
from __future__ import annotations

import json
import logging
from typing import Any


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Logs ``{"event": event, **fields}`` as one JSON line (skipped cheaply when the level is off)."""
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps({"event": event, **fields}, default=str, separators=(",", ":")))
