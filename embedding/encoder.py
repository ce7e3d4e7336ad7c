"""``NoteEncoder``: a loaded model that turns note dicts into L2-normalised float32 embeddings."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from embedding.config import ModelConfig
from embedding.inputs import NoteProcessor, PreparedBatch
from embedding.mlrm import MLRM


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU, unless a device is named."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device, bf16: bool = True):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class NoteEncoder:
    """Embeds notes with one checkpoint; ``model_version`` names the weights and config it came from."""

    def __init__(self, model: MLRM, tokenizer, model_version: str, device: torch.device):
        self.model = model.to(device).eval()
        self.config: ModelConfig = model.config
        self.processor = NoteProcessor(model.config, tokenizer)
        self.tokenizer = tokenizer
        self.model_version = model_version
        self.device = device
        self.dim = model.config.embed_dim
        self.image_failures = 0  # notes embedded without their image (missing or undecodable)

    def token_length(self, note: dict[str, Any]) -> int:
        """Tokens of the note's title, topics and content (untruncated) under the model's tokenizer."""
        return self.processor.token_length(note)

    def prepare(self, notes: list[dict[str, Any]]) -> PreparedBatch:
        batch = self.processor.prepare(notes)
        if self.config.uses_image:
            self.image_failures += int((~batch.image_ok).sum())
        return batch

    @torch.inference_mode()
    def embed_prepared(self, batch: PreparedBatch) -> torch.Tensor:
        """(n, dim) float32 L2-normalised embeddings on ``device``: the bare forward pass."""
        with autocast_for(self.device):
            out = self.model(batch.to(self.device))
        return out.multimodal.float()

    def encode(self, notes: list[dict[str, Any]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """One row per note, in input order; notes are grouped by length so padding stays small."""
        result = np.zeros((len(notes), self.dim), dtype=np.float32)
        if not notes:
            return result
        order = sorted(range(len(notes)), key=lambda i: self.token_length(notes[i]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embedding", unit="batch")
        for start in starts:
            rows = order[start:start + batch_size]
            result[rows] = self.embed_prepared(self.prepare([notes[i] for i in rows])).cpu().numpy()
        return result
