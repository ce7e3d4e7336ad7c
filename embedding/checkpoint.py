"""Self-contained checkpoint directories: everything needed to embed notes or resume training.

```
DIR/
  config.json          ModelConfig (variant, backbones, connector, prompt limits, embed_dim)
  model.safetensors    all weights, the frozen vision encoder included
  llm/config.json      the LLM's transformers config (after layer trimming and vocabulary growth)
  vision/config.json   the vision model's transformers config (kind "hf" only)
  tokenizer/           the LLM tokenizer with <IMG> and <IMG_EMB>
  meta.json            model_version, training step and summary
  training_state.pt    optimizer, scheduler and step (for resuming; not needed to embed)
```

``model_version`` is ``<variant>-<16 hex>`` of the SHA-256 over config.json and model.safetensors,
so two checkpoints share it exactly when they embed identically. Directories are written to a
temporary name and renamed, so an interrupted save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_model as load_safetensors_into, save_model

from embedding.backbones import load_tokenizer
from embedding.config import ModelConfig, model_config_from_dict, to_dict
from embedding.encoder import NoteEncoder
from embedding.mlrm import MLRM
from i2i.core.device import pick_device
from i2i.core.errors import InputError
from i2i.core.io import atomic_dir

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "training_state.pt"
REQUIRED = (CONFIG_FILE, WEIGHTS_FILE, META_FILE, "llm/config.json", "tokenizer")


def compute_model_version(directory: Path, variant: str) -> str:
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return f"{variant}-{digest.hexdigest()[:16]}"


def save_checkpoint(model: MLRM, tokenizer, out_dir: str | Path, meta: dict[str, Any] | None = None,
                    training_state: dict[str, Any] | None = None,
                    extra_tables: dict[str, Any] | None = None,
                    extra_files: dict[str, bytes] | None = None) -> str:
    """Writes the checkpoint atomically; returns its model_version.

    ``extra_tables`` (name -> Arrow table) are written beside it as Parquet tables, e.g. the
    dead-letter table of pairs that training could not use; ``extra_files`` (name -> bytes) are
    written as they are (the training log and curves).
    """
    with atomic_dir(out_dir) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(model.config), indent=2, sort_keys=True))
        save_model(model, str(tmp / WEIGHTS_FILE))
        model.llm.config.save_pretrained(str(tmp / "llm"))
        hf_vision = getattr(model.vision, "hf_config", None)
        if hf_vision is not None:
            hf_vision.save_pretrained(str(tmp / "vision"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        version = compute_model_version(tmp, model.config.variant)
        full_meta = {"model_version": version, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     **(meta or {})}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        for name, table in (extra_tables or {}).items():
            (tmp / name).mkdir()
            pq.write_table(table, tmp / name / "part-00000.parquet")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return version


def _require_checkpoint(directory: Path) -> None:
    if not directory.is_dir():
        raise InputError(f"checkpoint directory not found: {directory}")
    missing = [name for name in REQUIRED if not (directory / name).exists()]
    if missing:
        raise InputError(f"{directory} is not a checkpoint: missing {', '.join(missing)}")


def read_meta(path: str | Path) -> dict[str, Any]:
    directory = Path(path)
    _require_checkpoint(directory)
    return json.loads((directory / META_FILE).read_text())


def load_model(path: str | Path, verify: bool = True) -> tuple[MLRM, Any, dict[str, Any]]:
    """Rebuilds the model from the checkpoint alone; returns (model on CPU, tokenizer, meta)."""
    directory = Path(path)
    _require_checkpoint(directory)
    try:
        config: ModelConfig = model_config_from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"checkpoint {directory} has an unreadable {CONFIG_FILE}: {exc}") from exc
    meta = json.loads((directory / META_FILE).read_text())
    if verify:
        actual = compute_model_version(directory, config.variant)
        if actual != meta.get("model_version"):
            raise InputError(f"checkpoint {directory} is corrupt: weights/config hash to {actual}, "
                             f"meta.json says {meta.get('model_version')}")
    tokenizer = load_tokenizer(config.llm, saved_dir=str(directory / "tokenizer"))
    vision_dir = directory / "vision"
    model = MLRM(config, len(tokenizer), pretrained=False, llm_config_dir=str(directory / "llm"),
                 vision_config_dir=str(vision_dir) if vision_dir.is_dir() else None)
    missing, unexpected = load_model_weights(model, directory / WEIGHTS_FILE)
    if missing or unexpected:
        raise InputError(f"checkpoint {directory} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model, tokenizer, meta


def load_model_weights(model: MLRM, weights: Path) -> tuple[list[str], list[str]]:
    missing, unexpected = load_safetensors_into(model, str(weights), strict=False)
    return list(missing), list(unexpected)


def load_training_state(path: str | Path) -> dict[str, Any] | None:
    state_file = Path(path) / STATE_FILE
    return torch.load(state_file, map_location="cpu", weights_only=False) if state_file.is_file() else None


def load_encoder(path: str, device: str | None = None) -> NoteEncoder:
    """The checkpoint as a ``NoteEncoder`` on ``device`` (CUDA when present, else CPU)."""
    model, tokenizer, meta = load_model(path)
    return NoteEncoder(model, tokenizer, meta["model_version"], pick_device(device))
