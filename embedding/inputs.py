"""Notes -> model inputs: prompt ids left-padded so the last position is every note's last token,
and images decoded to normalised pixels (a missing or undecodable image becomes a zero image)."""
from __future__ import annotations

import io
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from embedding.config import ModelConfig
from embedding.prompts import PromptBuilder


@dataclass
class PreparedBatch:
    """Tensors for one forward pass; ``image_ok`` is False where the note's image was missing or broken."""

    input_ids: torch.Tensor  # (B, T) long, left-padded
    attention_mask: torch.Tensor  # (B, T) long
    position_ids: torch.Tensor  # (B, T) long, 0 at each note's first real token
    image_mask: torch.Tensor  # (B, T) bool, the L_c positions that receive visual embeddings
    img_emb_index: torch.Tensor  # (B,) long, position of <IMG_EMB> (-1 when the prompt has none)
    pixels: torch.Tensor | None  # (B, 3, S, S) float32, None for text_only
    image_ok: torch.Tensor  # (B,) bool
    features: torch.Tensor | None = None  # (B, L, h_v) cached frozen-encoder features (then pixels is None)
    pooled: torch.Tensor | None = None  # (B, h_v)
    image_keys: list[bytes] | None = None  # per note, the vision cache's key of its image (when one is used)

    def to(self, device) -> "PreparedBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return PreparedBatch(**{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                                for k, v in moved.items()})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def decode_image(data: bytes | None, size: int, mean: float, std: float) -> np.ndarray | None:
    """Encoded JPEG/PNG bytes -> float32 (3, size, size) normalised pixels; None when missing or undecodable."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32)
    except Exception:  # PIL raises many types for corrupt data; any of them means "no usable image"
        return None
    return ((array / 255.0 - mean) / std).transpose(2, 0, 1).copy()


class NoteProcessor:
    """Builds ``PreparedBatch``es for one model configuration and tokenizer."""

    def __init__(self, config: ModelConfig, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, config.variant, config.prompt, config.connector.num_queries)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def token_length(self, note: dict[str, Any]) -> int:
        return self.prompts.token_length(note)

    def pixels(self, note: dict[str, Any]) -> np.ndarray | None:
        vision = self.config.vision
        return decode_image(note.get("image"), vision.image_size, vision.mean, vision.std)

    def prepare(self, notes: list[dict[str, Any]], images: bool = True) -> PreparedBatch:
        """``images=False`` leaves pixels out (the caller supplies cached vision features)."""
        prompts = [self.prompts.build(note) for note in notes]
        length = max(len(p.ids) for p in prompts)
        n = len(notes)
        input_ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        image_mask = torch.zeros((n, length), dtype=torch.bool)
        img_emb_index = torch.full((n,), -1, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            pad = length - len(prompt.ids)
            input_ids[row, pad:] = torch.tensor(prompt.ids, dtype=torch.long)
            attention_mask[row, pad:] = 1
            if prompt.image_start is not None:
                start = pad + prompt.image_start
                image_mask[row, start:start + self.config.connector.num_queries] = True
            if prompt.img_emb_position is not None:
                img_emb_index[row] = pad + prompt.img_emb_position
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        pixels, image_ok = None, torch.zeros(n, dtype=torch.bool)
        if self.config.uses_image and images:
            size = self.config.vision.image_size
            pixels = torch.zeros((n, 3, size, size), dtype=torch.float32)
            for row, note in enumerate(notes):
                decoded = self.pixels(note)
                if decoded is not None:
                    pixels[row] = torch.from_numpy(decoded)
                    image_ok[row] = True
        return PreparedBatch(input_ids, attention_mask, position_ids, image_mask, img_emb_index, pixels, image_ok)
