"""The on-disk cache of frozen vision features: exact, shared across checkpoints, keyed by encoder and image."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from embedding.embed_cli import main as embed_main
from embedding.encoder import NoteEncoder
from embedding.table import open_table
from embedding.testing import make_notes, make_tiny_checkpoint, png_bytes, tiny_model
from embedding.vision_cache import KEY_BYTES, VisionCache, fingerprint, image_key
from i2i.core.errors import InputError
from i2i.core.io import write_table
from i2i.core.schemas import NOTES


def encoder_of(model, tokenizer) -> NoteEncoder:
    return NoteEncoder(model, tokenizer, "test-version", torch.device("cpu"))


def notes_with_gaps() -> list[dict]:
    notes = make_notes(20, seed=5)
    notes[3]["image"] = None  # embedded with the blank image
    notes[7]["image"] = notes[2]["image"]  # the same photo in two notes
    return notes


def test_cached_features_embed_exactly_and_serve_another_checkpoint_with_the_same_encoder(tmp_path):
    notes = notes_with_gaps()
    distinct = len({image_key(n) for n in notes})
    first, tokenizer = tiny_model("notellm2", seed=0)
    second, _ = tiny_model("basic", seed=1)  # another variant and other weights ...
    second.vision.load_state_dict(first.vision.state_dict())  # ... but the same frozen encoder
    assert fingerprint(first) == fingerprint(second)
    direct_first = encoder_of(first, tokenizer).encode(notes, batch_size=6)
    direct_second = encoder_of(second, tokenizer).encode(notes, batch_size=6)

    cached = encoder_of(first, tokenizer)
    cached.use_vision_cache(str(tmp_path))
    np.testing.assert_allclose(cached.encode(notes, batch_size=6), direct_first, atol=1e-6)
    assert (cached.vision_cache.misses, cached.vision_cache.hits) == (distinct, len(notes) - distinct)

    other = encoder_of(second, tokenizer)
    other.use_vision_cache(str(tmp_path))  # a new process would find the parts on disk
    assert len(other.vision_cache) == distinct
    np.testing.assert_allclose(other.encode(notes, batch_size=6), direct_second, atol=1e-6)
    assert (other.vision_cache.misses, other.vision_cache.hits) == (0, len(notes))


def test_another_encoder_or_a_changed_image_is_a_miss(tmp_path):
    notes = notes_with_gaps()
    model, tokenizer = tiny_model("notellm2", seed=0)
    encoder = encoder_of(model, tokenizer)
    encoder.use_vision_cache(str(tmp_path))
    encoder.encode(notes)
    foreign, _ = tiny_model("notellm2", seed=2)  # other vision weights
    assert fingerprint(foreign) != fingerprint(model)
    assert len(VisionCache(tmp_path, foreign)) == 0

    changed = [dict(n) for n in notes]
    changed[0]["image"] = png_bytes((1, 2, 3), seed=99)  # same note id, a new photo
    again = encoder_of(model, tokenizer)
    again.use_vision_cache(str(tmp_path))
    result = again.encode(changed)
    assert (again.vision_cache.misses, again.vision_cache.hits) == (1, len(notes) - 1)
    np.testing.assert_allclose(result, encoder_of(model, tokenizer).encode(changed), atol=1e-6)


def test_a_damaged_part_is_recomputed_not_read(tmp_path):
    notes = make_notes(8, seed=1)
    model, tokenizer = tiny_model("notellm2", seed=0)
    encoder = encoder_of(model, tokenizer)
    encoder.use_vision_cache(str(tmp_path))
    expected = encoder.encode(notes)
    (part,) = [p for p in (tmp_path / fingerprint(model)).iterdir() if p.name.startswith("part-")]
    (part / "features.npy").write_bytes(b"not an array")
    reopened = encoder_of(model, tokenizer)
    reopened.use_vision_cache(str(tmp_path))
    assert len(reopened.vision_cache) == 0
    np.testing.assert_allclose(reopened.encode(notes), expected, atol=1e-6)
    assert reopened.vision_cache.misses == len(notes)


def test_keys_ending_in_zero_bytes_survive_the_round_trip(tmp_path):
    model, _ = tiny_model("notellm2", seed=0)
    cache = VisionCache(tmp_path, model)
    key = b"\x07" * (KEY_BYTES - 2) + b"\x00\x00"
    features, pooled = np.ones((4, 3), np.float32), np.full(3, 2.0, np.float32)
    cache._pending[key] = (features, pooled)
    cache.flush()
    found = VisionCache(tmp_path, model).lookup(key)
    assert found is not None
    np.testing.assert_array_equal(found[0], features)
    np.testing.assert_array_equal(found[1], pooled)


def test_text_only_models_need_no_cache(tmp_path):
    model, tokenizer = tiny_model("text_only", seed=0)
    encoder = encoder_of(model, tokenizer)
    encoder.use_vision_cache(str(tmp_path))
    assert encoder.vision_cache is None
    with pytest.raises(InputError, match="reads images"):
        VisionCache(tmp_path, model)


def test_embed_job_with_a_vision_cache_writes_the_same_table(tmp_path):
    notes = notes_with_gaps()
    write_table(pa.Table.from_pylist(notes, schema=NOTES), tmp_path / "notes")
    checkpoint = make_tiny_checkpoint(str(tmp_path / "ckpt"))
    tables = {}
    for name, extra in (("plain", []), ("cached", ["--vision-cache", str(tmp_path / "vc")]),
                        ("warm", ["--vision-cache", str(tmp_path / "vc")])):
        url = f"parquet:{tmp_path / name}"
        assert embed_main(["--notes", str(tmp_path / "notes"), "--checkpoint", checkpoint, "--table", url,
                           "--no-progress", *extra]) == 0
        with open_table(url) as table:
            (version,) = table.model_versions()
            lookup = table.get_many([n["note_id"] for n in notes], version)
            tables[name] = lookup.vectors
    assert any((tmp_path / "vc").rglob("features.npy"))
    np.testing.assert_allclose(tables["cached"], tables["plain"], atol=1e-6)
    np.testing.assert_allclose(tables["warm"], tables["plain"], atol=1e-6)
