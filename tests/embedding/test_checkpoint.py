import json

import numpy as np
import pytest

from embedding.checkpoint import load_encoder, read_meta, save_checkpoint
from embedding.testing import make_notes, make_tiny_checkpoint, tiny_model
from i2i.core.errors import InputError


def test_round_trip_gives_identical_embeddings(tmp_path):
    model, tokenizer = tiny_model("notellm2", seed=4)
    version = save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    notes = make_notes(6)
    import torch

    from embedding.encoder import NoteEncoder

    before = NoteEncoder(model, tokenizer, version, torch.device("cpu")).encode(notes)
    encoder = load_encoder(str(tmp_path / "ckpt"), device="cpu")
    assert encoder.model_version == version and encoder.dim == model.config.embed_dim
    np.testing.assert_array_equal(encoder.encode(notes), before)


def test_encoder_api(tiny_checkpoint, sample_notes):
    encoder = load_encoder(tiny_checkpoint, device="cpu")
    sample_notes[2]["image"] = b"broken"
    sample_notes[5]["image"] = None
    vectors = encoder.encode(sample_notes, batch_size=3, progress=False)
    assert vectors.shape == (8, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.image_failures == 2
    batch = encoder.prepare(sample_notes[:2])
    np.testing.assert_allclose(encoder.embed_prepared(batch).cpu().numpy(), vectors[:2], atol=1e-5)
    assert encoder.token_length(sample_notes[0]) > 0
    assert encoder.token_length({"title": "a b", "topics": [], "content": ""}) < encoder.token_length(sample_notes[0])
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_model_version_follows_weights_and_config(tmp_path):
    same_a = make_tiny_checkpoint(str(tmp_path / "a"), seed=0)
    same_b = make_tiny_checkpoint(str(tmp_path / "b"), seed=0)
    other_seed = make_tiny_checkpoint(str(tmp_path / "c"), seed=1)
    other_variant = make_tiny_checkpoint(str(tmp_path / "d"), variant="micl", seed=0)
    versions = [read_meta(p)["model_version"] for p in (same_a, same_b, other_seed, other_variant)]
    assert versions[0] == versions[1]
    assert len(set(versions[1:])) == 3
    assert versions[3].startswith("micl-")


def test_corrupt_or_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_encoder(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing config.json"):
        load_encoder(str(tmp_path / "empty"))
    path = make_tiny_checkpoint(str(tmp_path / "ckpt"))
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt"):
        load_encoder(path)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    path = make_tiny_checkpoint(str(tmp_path / "ckpt"), seed=0)
    before = read_meta(path)["model_version"]
    model, tokenizer = tiny_model("notellm2", seed=9)
    with pytest.raises(AttributeError, match="'str' object has no attribute 'schema'"):
        save_checkpoint(model, tokenizer, path, extra_tables={"dead_letter": "not a table"})
    assert read_meta(path)["model_version"] == before
    assert load_encoder(path, device="cpu").model_version == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind


def test_checkpoint_holds_everything_needed(tiny_checkpoint):
    from pathlib import Path

    names = {p.name for p in Path(tiny_checkpoint).iterdir()}
    assert {"config.json", "model.safetensors", "llm", "tokenizer", "meta.json"} <= names
    config = json.loads((Path(tiny_checkpoint) / "config.json").read_text())
    assert config["variant"] == "notellm2" and config["embed_dim"] == 32
