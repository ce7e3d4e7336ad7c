import pytest
import torch

from embedding.backbones import (
    EfficientNetLite0,
    build_llm,
    build_vision,
    converted_gguf_dir,
    freeze,
    keep_first_layers,
    load_tokenizer,
)
from embedding.config import LLMConfig, VisionConfig
from i2i.core.errors import InputError


def test_efficientnet_lite0_loads_real_weights_and_gives_a_feature_sequence():
    encoder = freeze(EfficientNetLite0(image_size=64, pretrained=True))
    random_init = EfficientNetLite0(image_size=64, pretrained=False)
    features, pooled = encoder(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 4, 1280) and pooled.shape == (2, 1280)
    stem = encoder.net._conv_stem.weight
    assert not torch.equal(stem, random_init.net._conv_stem.weight)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_transformers_vision_model_by_directory(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(tmp_path)
    encoder = build_vision(VisionConfig(kind="hf", path=str(tmp_path), image_size=32), pretrained=True)
    features, pooled = encoder(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, 17, 32) and pooled.shape == (2, 32) and encoder.feature_dim == 32


def test_keep_first_layers_trims_a_decoder():
    tokenizer = load_tokenizer(LLMConfig())
    model = build_llm(LLMConfig(tiny_layers=3), len(tokenizer), pretrained=True)
    keep_first_layers(model, 1)
    assert len(model.layers) == 1 and model.config.num_hidden_layers == 1
    out = model(input_ids=torch.tensor([[5, 6, 7]])).last_hidden_state
    assert out.shape == (1, 3, model.config.hidden_size)


def test_tokenizer_gets_the_prompt_special_tokens():
    tokenizer = load_tokenizer(LLMConfig())
    ids = tokenizer("x<IMG_EMB>y", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<IMG_EMB>") in ids and len(ids) == 3


def test_missing_backbone_files_are_named(tmp_path):
    with pytest.raises(InputError, match="GGUF file not found"):
        converted_gguf_dir(str(tmp_path / "none.gguf"))
    with pytest.raises(InputError, match="vision model directory not found"):
        build_vision(VisionConfig(kind="hf", path=str(tmp_path / "none")), pretrained=True)
