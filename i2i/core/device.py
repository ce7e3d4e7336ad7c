"""Device choice for the torch parts (training, embedding, evaluation); torch is imported only when asked."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device(device: str | None = None) -> "torch.device":
    """CUDA when present, else CPU, unless a device is named."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
