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


@pytest.mark.parametrize("target", [0.9, 0.99])
def test_default_nprobe_is_the_smallest_that_reaches_the_target_merged_recall(target):
    """Checked against an independent brute-force merged recall at the chosen nprobe and the one below it."""
    from index.calibrate import CANDIDATES

    from .conftest import clustered

    rng = np.random.default_rng(5)
    vectors = clustered(rng, 6000, clusters=60, spread=1.0)
    embeddings = from_arrays([f"n{i}" for i in range(len(vectors))], vectors, "m")
    config = BuildConfig(nlist=64, target_recall=target, calibration_k=50, calibration_history=10)
    result = build(embeddings, config)
    chosen = result.default_nprobe
    assert result.calibration is not None and result.calibration.recall >= target

    histories = [np.random.default_rng(99 + h).choice(len(vectors), 10, replace=False) for h in range(30)]
    index = result.contents.index  # ids are the rows here

    def merged_recall(nprobe: int) -> float:
        return brute_force_merged_recall(index, vectors, histories, nprobe, k=50)

    assert merged_recall(chosen) >= target - 0.03  # other histories: within sampling error
    lower = [c for c in CANDIDATES if c < chosen]
    assert lower, "the data must need more than one list, or the test shows nothing"
    assert merged_recall(lower[-1]) < target + 0.03


def test_codes_that_cap_recall_below_the_target_get_the_start_of_the_plateau_not_every_list():
    """Lossy codes without re-ranking (PQ4 on 16-d vectors) cannot reach 0.999: the default is the
    smallest nprobe at the best recall measured, where probing more lists gains nothing."""
    from index.calibrate import PLATEAU

    from .conftest import clustered

    rng = np.random.default_rng(7)
    vectors = clustered(rng, 6000, clusters=60, spread=1.0)
    embeddings = from_arrays([f"n{i}" for i in range(len(vectors))], vectors, "m")
    config = BuildConfig(nlist=64, factory="PQ4", rerank=False, target_recall=0.999, calibration_k=50,
                         calibration_history=10)
    result = build(embeddings, config)
    tried = result.calibration.recall_by_nprobe
    assert max(tried.values()) < 0.999, "the codes must cap the recall, or the test shows nothing"
    assert 64 in tried  # every candidate was measured, the full scan included
    chosen = result.default_nprobe
    assert chosen < 64
    assert tried[chosen] >= max(tried.values()) - PLATEAU
    assert all(recall < max(tried.values()) - PLATEAU for nprobe, recall in tried.items() if nprobe < chosen)
    # The same index searched at every list finds no more of the exact merged top 50 than at the chosen nprobe.
    index = result.contents.index
    histories = [np.random.default_rng(31 + h).choice(len(vectors), 10, replace=False) for h in range(20)]

    def merged_recall(nprobe: int) -> float:
        return brute_force_merged_recall(index, vectors, histories, nprobe, k=50)

    assert merged_recall(64) <= merged_recall(chosen) + 0.02


def brute_force_merged_recall(index, vectors: np.ndarray, histories: list[np.ndarray], nprobe: int, k: int) -> float:
    """Mean share of each history's exact merged top k (numpy, history left out) that the index
    finds at ``nprobe``, merged by best score: a reference written apart from index/calibrate.py."""
    from index.search import search_parameters

    recalls = []
    for rows in histories:
        exact = (vectors[rows] @ vectors.T).max(axis=0)
        exact[rows] = -np.inf
        truth = set(np.argsort(-exact)[:k].tolist())
        scores, found = index.search(vectors[rows], k + len(rows), params=search_parameters(index, nprobe))
        best: dict[int, float] = {}
        for score, label in zip(scores.ravel().tolist(), found.ravel().tolist()):
            if label >= 0 and label not in rows and score > best.get(label, -np.inf):
                best[label] = score
        recalls.append(len(truth & set(sorted(best, key=lambda label: -best[label])[:k])) / k)
    return float(np.mean(recalls))
