import pytest

from embedding.config import model_config_from_dict, preset, run_config_from_dict, to_dict
from i2i.core.errors import InputError


@pytest.mark.parametrize("name", ["tiny", "cpu_offline", "gpu_full"])
def test_presets_are_valid_configs(name):
    run = run_config_from_dict(preset(name))
    assert run.model.connector.num_queries >= 1 and run.train.steps >= 1


def test_full_size_config_keeps_every_llm_layer_and_paper_qformer():
    run = run_config_from_dict(preset("gpu_full"))
    assert run.model.llm.num_layers is None
    assert (run.model.connector.num_layers, run.model.connector.num_heads, run.model.connector.hidden_size,
            run.model.connector.cross_attention_frequency, run.model.connector.num_queries) == (6, 12, 768, 2, 16)
    assert run.train.bf16


def test_config_round_trips_through_json_dict():
    config = model_config_from_dict(preset("cpu_offline")["model"])
    assert model_config_from_dict(to_dict(config)) == config


def test_unknown_variant_and_preset_are_named():
    with pytest.raises(InputError, match="unknown variant 'fancy'"):
        model_config_from_dict({"variant": "fancy"})
    with pytest.raises(InputError, match="unknown configuration 'huge'"):
        preset("huge")
    with pytest.raises(InputError, match="needs llm.path"):
        model_config_from_dict({"llm": {"kind": "hf"}})
