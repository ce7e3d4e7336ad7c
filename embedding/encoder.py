"""``NoteEncoder``: a loaded model that turns note dicts into L2-normalised float32 embeddings."""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from embedding.config import ModelConfig
from embedding.inputs import NoteProcessor, PreparedBatch
from embedding.mlrm import MLRM


def autocast_for(device: torch.device, bf16: bool = True):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Notes per forward pass when the caller names none: big batches keep a GPU busy; on a CPU
# small ones keep padding and memory low.
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 32}


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
        self.vision_cache = None  # embedding.vision_cache.VisionCache, see use_vision_cache

    def use_vision_cache(self, directory: str | None) -> None:
        """Reads and writes the frozen vision encoder's features in ``directory`` (None: no cache; a
        text-only model has nothing to cache)."""
        if directory and self.config.uses_image:
            from embedding.vision_cache import VisionCache

            self.vision_cache = VisionCache(directory, self.model)

    def close(self) -> None:
        """Writes what the vision cache still holds in memory."""
        if self.vision_cache is not None:
            self.vision_cache.flush()

    @property
    def default_batch_size(self) -> int:
        return DEFAULT_BATCH_SIZE.get(self.device.type, 32)

    @property
    def prepare_workers(self) -> int:
        """Threads that decode images and tokenise ahead of the GPU (0 on a CPU: they would compete)."""
        return min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """One autocast region around many batches: autocast caches each weight's bf16 copy inside a
        region, so the weights are cast once per region instead of once per batch."""
        with torch.inference_mode(), autocast_for(self.device):
            yield

    def prepared(self, batches: Sequence[list[dict[str, Any]]]) -> Iterator[tuple[PreparedBatch | None,
                                                                              Exception | None]]:
        """(prepared batch, error) per batch, in order; on a GPU up to ``prepare_workers`` batches are
        prepared ahead on threads (PIL decoding and tokenisation release the GIL)."""

        def prepare(notes: list[dict[str, Any]]):
            try:
                return self.prepare(notes), None
            except Exception as exc:  # a note the prompt builder or image decoder cannot handle
                return None, exc

        if self.prepare_workers == 0:
            yield from (prepare(batch) for batch in batches)
            return
        with ThreadPoolExecutor(self.prepare_workers) as pool:
            pending = [pool.submit(prepare, batch) for batch in batches[: self.prepare_workers + 1]]
            for index in range(len(batches)):
                ahead = index + self.prepare_workers + 1
                if ahead < len(batches):
                    pending.append(pool.submit(prepare, batches[ahead]))
                yield pending[index].result()
                pending[index] = None  # release the prepared tensors once they are used

    def token_length(self, note: dict[str, Any]) -> int:
        """Tokens of the note's title, topics and content (untruncated) under the model's tokenizer."""
        return self.processor.token_length(note)

    def prepare(self, notes: list[dict[str, Any]]) -> PreparedBatch:
        batch = self.processor.prepare(notes)
        if self.config.uses_image:
            self.image_failures += int((~batch.image_ok).sum())
        if self.vision_cache is not None:
            from embedding.vision_cache import image_key

            batch.image_keys = [image_key(note) for note in notes]
        return batch

    @torch.inference_mode()
    def embed_prepared(self, batch: PreparedBatch) -> torch.Tensor:
        """(n, dim) float32 L2-normalised embeddings on ``device``: the bare forward pass."""
        with autocast_for(self.device):
            if self.vision_cache is not None and batch.image_keys is not None and batch.features is None:
                batch = self.vision_cache.attach(batch, batch.image_keys, self.device)
            out = self.model(batch.to(self.device))
        return out.multimodal.float()

    def encode(self, notes: list[dict[str, Any]], batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """One row per note, in input order; notes are grouped by length so padding stays small."""
        batch_size = batch_size or self.default_batch_size
        result = np.zeros((len(notes), self.dim), dtype=np.float32)
        if not notes:
            return result
        order = sorted(range(len(notes)), key=lambda i: self.token_length(notes[i]))
        rows = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        batches = [[notes[i] for i in batch_rows] for batch_rows in rows]
        outputs = self.prepared(batches)
        if progress:
            from tqdm import tqdm

            outputs = tqdm(outputs, total=len(batches), desc="embedding", unit="batch")
        with self.inference():
            for batch_rows, (ready, error) in zip(rows, outputs):
                if error is not None:
                    raise error
                result[batch_rows] = self.embed_prepared(ready).cpu().numpy()
        self.close()
        return result
