"""Training and filling fresh IVF indexes: factories, nlist choice, recall against exact search."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from i2i.core.errors import InputError
from index.builder import BuildConfig, auto_nlist, build, resolve_factory
from index.source import from_arrays


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, k)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def result_factor(rerank: bool) -> int:
    return BuildConfig().rerank_factor if rerank else 1


def test_auto_nlist_grows_with_the_corpus_and_keeps_39_vectors_per_list():
    assert auto_nlist(100) == 2
    assert auto_nlist(10) == 1
    assert auto_nlist(1_000_000) == 4096
    for n in (500, 5_000, 50_000, 500_000):
        assert 1 <= auto_nlist(n) <= n // 39


def test_factory_strings_are_resolved_or_refused():
    assert resolve_factory("Flat", 16, 10_000) == ("IVF16,Flat", 16)
    assert resolve_factory("OPQ8,IVF{nlist},PQ8", 32, 10_000) == ("OPQ8,IVF32,PQ8", 32)
    assert resolve_factory("IVF64,SQ8", None, 10_000) == ("IVF64,SQ8", 64)
    with pytest.raises(InputError, match="contradicts"):
        resolve_factory("IVF64,SQ8", 32, 10_000)
    with pytest.raises(InputError, match="IDMap"):
        resolve_factory("IDMap2,Flat", None, 10_000)


@pytest.mark.parametrize("factory", ["HNSW32", "Flat,Bogus", "PQ5"])
def test_invalid_or_non_ivf_factories_are_input_errors(corpus, factory):
    embeddings = from_arrays(corpus.note_ids, corpus.vectors, "m")
    with pytest.raises(InputError, match="factory|training"):
        build(embeddings, BuildConfig(factory=factory, nlist=8))


@pytest.mark.parametrize("factory, rerank", [("Flat", False), ("SQ8", False), ("PQ8", True)])
def test_each_encoding_reaches_high_recall_with_its_default_rerank(corpus, factory, rerank):
    embeddings = from_arrays(corpus.note_ids, corpus.vectors, "m")
    result = build(embeddings, BuildConfig(factory=factory, nlist=8))
    assert result.rerank is rerank and result.contents.index.ntotal == len(corpus.note_ids)
    assert result.contents.index.is_trained and result.nlist == 8
    queries = corpus.vectors[:100]
    params = faiss.SearchParametersIVF(nprobe=8)
    fetch = 10 * result_factor(rerank)
    _, labels = result.contents.index.search(queries, fetch, params=params)
    if rerank:
        from index.search import exact_rerank
        _, labels = exact_rerank(queries, labels, result.contents.vectors, 10, "ip")
    assert recall(labels[:, :10], exact_top(corpus.vectors, queries, 10)) >= 0.95


def test_vectors_are_added_under_their_own_ids_in_the_ivf_index(corpus):
    embeddings = from_arrays(corpus.note_ids, corpus.vectors, "m")
    result = build(embeddings, BuildConfig(nlist=8))
    assert isinstance(result.contents.index, faiss.IndexIVFFlat)  # no IndexIDMap2 wrapper
    _, labels = result.contents.index.search(corpus.vectors[:20], 1, params=faiss.SearchParametersIVF(nprobe=8))
    assert result.contents.ids.note_ids_of(labels[:, 0]).tolist() == corpus.note_ids[:20]


def test_unusable_embeddings_go_to_the_dead_letter_with_reasons(corpus):
    vectors = corpus.vectors.copy()
    vectors[3] = np.nan
    vectors[5] = 0
    embeddings = from_arrays(corpus.note_ids, vectors, "m")
    assert len(embeddings) == len(corpus.note_ids) - 2
    reasons = sorted(record["reason"] for record in embeddings.dead_letter)
    assert reasons == ["embedding has NaN or infinite values", "embedding is all zeros"]
    assert corpus.note_ids[3] in embeddings.dead_letter[0]["raw"] + embeddings.dead_letter[1]["raw"]


def test_too_few_vectors_for_the_lists_is_an_input_error(corpus):
    embeddings = from_arrays(corpus.note_ids[:20], corpus.vectors[:20], "m")
    with pytest.raises(InputError, match="cannot train 64 lists on 20 vectors"):
        build(embeddings, BuildConfig(nlist=64))
