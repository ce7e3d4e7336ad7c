"""Note inputs for training and diagnostics, with the frozen vision encoder's outputs cached per note."""
from __future__ import annotations

import torch

from embedding.batching import Pair
from embedding.inputs import NoteProcessor, PreparedBatch
from embedding.mlrm import MLRM


class FeatureCache:
    """Frozen vision-encoder outputs per note, each computed once, when a batch first needs it: exact,
    because the encoder is frozen and images are not augmented. It removes the encoder from every
    training step, and a run pays only for the notes it draws (a few thousand of a 40k-pair split)."""

    def __init__(self, model: MLRM, processor: NoteProcessor, notes: dict[str, dict], device: torch.device,
                 chunk: int = 32):
        self.model, self.processor, self.notes, self.device, self.chunk = model, processor, notes, device, chunk
        self.row: dict[str, int] = {}
        self._features: list[torch.Tensor] = []  # one (L, h_v) tensor per cached note, on the CPU
        self._pooled: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.row)

    def ensure(self, note_ids: list[str]) -> None:
        """Computes the features of the notes not cached yet (DataLoader workers need them all up front:
        they cannot run the encoder)."""
        missing = [n for n in dict.fromkeys(note_ids) if n not in self.row]
        with torch.no_grad():
            for start in range(0, len(missing), self.chunk):
                ids = missing[start:start + self.chunk]
                batch = self.processor.prepare([self.notes[n] for n in ids])
                features, pooled = self.model.encode_image(batch.pixels.to(self.device))
                for note_id, f, p in zip(ids, features.cpu(), pooled.cpu()):
                    self.row[note_id] = len(self._features)
                    self._features.append(f)
                    self._pooled.append(p)

    def attach(self, batch: PreparedBatch, note_ids: list[str]) -> PreparedBatch:
        self.ensure(note_ids)
        rows = [self.row[n] for n in note_ids]
        batch.features = torch.stack([self._features[r] for r in rows])
        batch.pooled = torch.stack([self._pooled[r] for r in rows])
        return batch


def prepare_notes(processor: NoteProcessor, ids: list[str], notes: dict[str, dict],
                  cache: FeatureCache | None) -> PreparedBatch:
    if cache is None:
        return processor.prepare([notes[n] for n in ids])
    return cache.attach(processor.prepare([notes[n] for n in ids], images=False), ids)


def prepare_batch(processor: NoteProcessor, batch: list[Pair], notes: dict[str, dict],
                  cache: FeatureCache | None) -> PreparedBatch:
    return prepare_notes(processor, [q for q, _ in batch] + [t for _, t in batch], notes, cache)
