"""Note inputs for training and diagnostics, with the frozen vision encoder's outputs cached per note."""
from __future__ import annotations

import torch

from embedding.batching import Pair
from embedding.inputs import NoteProcessor, PreparedBatch
from embedding.mlrm import MLRM


class FeatureCache:
    """Frozen vision-encoder outputs per note, computed once: exact, because the encoder is frozen and
    images are not augmented, and it removes the encoder from every training step."""

    def __init__(self, model: MLRM, processor: NoteProcessor, notes: dict[str, dict], note_ids: list[str],
                 device: torch.device, chunk: int = 32):
        self.row = {note_id: i for i, note_id in enumerate(note_ids)}
        features, pooled = [], []
        with torch.no_grad():
            for start in range(0, len(note_ids), chunk):
                batch = processor.prepare([notes[n] for n in note_ids[start:start + chunk]])
                f, p = model.encode_image(batch.pixels.to(device))
                features.append(f.cpu())
                pooled.append(p.cpu())
        self.features, self.pooled = torch.cat(features), torch.cat(pooled)

    def attach(self, batch: PreparedBatch, note_ids: list[str]) -> PreparedBatch:
        rows = torch.tensor([self.row[n] for n in note_ids], dtype=torch.long)
        batch.features, batch.pooled = self.features[rows], self.pooled[rows]
        return batch


def prepare_notes(processor: NoteProcessor, ids: list[str], notes: dict[str, dict],
                  cache: FeatureCache | None) -> PreparedBatch:
    if cache is None:
        return processor.prepare([notes[n] for n in ids])
    return cache.attach(processor.prepare([notes[n] for n in ids], images=False), ids)


def prepare_batch(processor: NoteProcessor, batch: list[Pair], notes: dict[str, dict],
                  cache: FeatureCache | None) -> PreparedBatch:
    return prepare_notes(processor, [q for q, _ in batch] + [t for _, t in batch], notes, cache)
