"""Frozen vision-encoder outputs on disk, shared by every checkpoint that has the same vision encoder.

The vision encoder is frozen, so every model version trained from it computes the same features for
an image: a results table of ten checkpoints, a daily retrain that re-embeds the catalogue, or a
replay's trained and untrained channels would otherwise run the encoder over the same images again
and again (on a CPU it is about 40% of embedding a note). The cache keys each entry by the encoder's
fingerprint (its kind, input size, normalisation and weights) and the SHA-1 of the image bytes, so
a changed image or another encoder never reads a stale entry; a note without an image is the empty
digest, whose features are those of the blank image the model sees.

Layout: ``DIR/<fingerprint>/part-<uuid>/{keys,features,pooled}.npy``. A part is written under a
hidden name and renamed into place, so readers see whole parts only; parts are memory-mapped, so a
cache larger than memory costs only the pages read. Entries are exact float32 copies of what the
encoder returns.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from embedding.inputs import PreparedBatch
from i2i.core.errors import InputError
from i2i.core.io import fsync_path

log = logging.getLogger(__name__)

FLUSH_ROWS = 1024  # buffered entries per part file
KEY_BYTES = 20  # SHA-1


def image_key(note: dict[str, Any]) -> bytes:
    """The cache key of a note's image: the digest of its bytes (the empty digest without one)."""
    return hashlib.sha1(note.get("image") or b"").digest()


def fingerprint(model) -> str:
    """Names the frozen encoder: its configuration and the bytes of its weights."""
    digest = hashlib.sha256(json.dumps(asdict(model.config.vision), sort_keys=True).encode())
    for name, tensor in sorted(model.vision.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


class VisionCache:
    """The cached features of one vision encoder; ``attach`` fills a batch's features from it."""

    def __init__(self, directory: str | os.PathLike, model) -> None:
        if model.vision is None:
            raise InputError("a vision cache needs a model that reads images (not text_only)")
        self.model = model
        self.root = Path(directory) / fingerprint(model)
        self.root.mkdir(parents=True, exist_ok=True)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []  # (features, pooled) per part
        self._where: dict[bytes, tuple[int, int]] = {}  # key -> (part, row)
        self._pending: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # computed, not written yet
        self.hits = self.misses = 0
        for part in sorted(p for p in self.root.iterdir() if p.name.startswith("part-")):
            self._load_part(part)

    def __len__(self) -> int:
        return len(self._where) + len(self._pending)

    def _load_part(self, part: Path) -> None:
        try:
            keys = np.load(part / "keys.npy")  # (n, 20) uint8: numpy's bytes dtype would drop trailing zeros
            features = np.load(part / "features.npy", mmap_mode="r")
            pooled = np.load(part / "pooled.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:  # a damaged part only costs recomputing its entries
            log.warning("vision cache: skipping unreadable part %s (%s)", part, exc)
            return
        if not (keys.ndim == 2 and keys.shape[1] == KEY_BYTES and len(features) == len(pooled) == len(keys)):
            log.warning("vision cache: skipping part %s whose files disagree in length", part)
            return
        index = len(self._parts)
        self._parts.append((features, pooled))
        for row in range(len(keys)):
            self._where.setdefault(keys[row].tobytes(), (index, row))

    def lookup(self, key: bytes) -> tuple[np.ndarray, np.ndarray] | None:
        if key in self._where:
            part, row = self._where[key]
            features, pooled = self._parts[part]
            return features[row], pooled[row]
        return self._pending.get(key)

    def attach(self, batch: PreparedBatch, keys: Sequence[bytes], device: torch.device) -> PreparedBatch:
        """Sets the batch's features from the cache, running the encoder on the rows it lacks only."""
        found = [self.lookup(key) for key in keys]
        missing = [row for row, entry in enumerate(found) if entry is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            features, pooled = self.model.encode_image(batch.pixels[missing].to(device))
            features, pooled = features.cpu().numpy(), pooled.cpu().numpy()
            for i, row in enumerate(missing):
                found[row] = (features[i], pooled[i])
                if self.lookup(keys[row]) is None:
                    self._pending[keys[row]] = (features[i], pooled[i])
            if len(self._pending) >= FLUSH_ROWS:
                self.flush()
        batch.features = torch.from_numpy(np.stack([f for f, _ in found]))
        batch.pooled = torch.from_numpy(np.stack([p for _, p in found]))
        batch.pixels = None
        return batch

    def flush(self) -> None:
        """Writes the buffered entries as one part (a kill before it only costs their recomputation)."""
        if not self._pending:
            return
        name = f"part-{uuid.uuid4().hex}"
        tmp = self.root / f".{name}"
        tmp.mkdir()
        keys = np.frombuffer(b"".join(self._pending), dtype=np.uint8).reshape(-1, KEY_BYTES)
        np.save(tmp / "keys.npy", keys)
        np.save(tmp / "features.npy", np.stack([f for f, _ in self._pending.values()]).astype(np.float32))
        np.save(tmp / "pooled.npy", np.stack([p for _, p in self._pending.values()]).astype(np.float32))
        for file in tmp.iterdir():
            fsync_path(file)
        os.replace(tmp, self.root / name)
        fsync_path(self.root)
        self._pending = {}
        self._load_part(self.root / name)
