"""Searching a loaded version: per-call nprobe, padding, exact re-ranking, many threads at once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest

from i2i.core.errors import InputError
from index import jobs
from index.builder import BuildConfig
from index.store import IndexStore


@pytest.fixture
def loaded(tmp_path, corpus):
    jobs.build_job(str(tmp_path / "idx"), corpus.url, BuildConfig(nlist=16, default_nprobe=4))
    return IndexStore(tmp_path / "idx").load()


def exact(corpus, queries, k):
    flat = faiss.IndexFlatIP(corpus.vectors.shape[1])
    flat.add(corpus.vectors)
    scores, rows = flat.search(queries, k)
    return scores, [[corpus.note_ids[r] for r in row] for row in rows]


def test_all_lists_probed_gives_the_exact_answer(loaded, corpus):
    queries = corpus.vectors[::50]
    scores, names = loaded.search(queries, 10, nprobe=16)
    exact_scores, exact_names = exact(corpus, queries, 10)
    assert names == exact_names
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)


def test_nprobe_is_per_call_and_does_not_change_the_shared_index(loaded, corpus):
    queries = corpus.vectors[:200]
    _, truth = exact(corpus, queries, 50)
    def recall(names):
        return np.mean([len(set(a) & set(b)) / 50 for a, b in zip(names, truth)])
    low = recall(loaded.search(queries, 50, nprobe=1)[1])
    high = recall(loaded.search(queries, 50, nprobe=16)[1])
    assert low < high == 1.0
    assert faiss.extract_index_ivf(loaded.index).nprobe == 1  # never mutated by a search
    assert recall(loaded.search(queries, 50)[1]) == recall(loaded.search(queries, 50, nprobe=4)[1])


def test_concurrent_searches_with_different_nprobe_match_serial_ones(loaded, corpus):
    rng = np.random.default_rng(5)
    calls = [(corpus.vectors[rng.integers(0, len(corpus.note_ids), 8)], int(rng.choice([1, 2, 8, 16])))
             for _ in range(48)]
    serial = [loaded.search(q, 20, nprobe=p) for q, p in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda call: loaded.search(call[0], 20, nprobe=call[1]), calls))
    for (s_scores, s_names), (p_scores, p_names) in zip(serial, parallel):
        assert s_names == p_names
        np.testing.assert_array_equal(s_scores, p_scores)


def test_fewer_results_than_k_drop_the_padding(loaded, corpus):
    scores, names = loaded.search(corpus.vectors[:2], len(corpus.note_ids) + 10, nprobe=16)
    assert [len(row) for row in names] == [len(corpus.note_ids)] * 2
    assert np.isneginf(scores[:, len(corpus.note_ids):]).all() and np.isfinite(scores[:, :len(corpus.note_ids)]).all()
    scores, labels = loaded.search_labels(corpus.vectors[:2], len(corpus.note_ids) + 10, nprobe=16)
    assert (labels[:, len(corpus.note_ids):] == -1).all()


def test_queries_are_normalised_for_inner_product(loaded, corpus):
    _, plain = loaded.search(corpus.vectors[:5], 5, nprobe=16)
    _, scaled = loaded.search(corpus.vectors[:5] * 7.5, 5, nprobe=16)
    assert plain == scaled


@pytest.mark.parametrize("queries, k, nprobe, message", [
    (np.zeros((2, 3), np.float32), 5, None, "16 columns"),
    (np.zeros(16, np.float32), 5, None, "2-d array"),
    (np.full((1, 16), np.nan, np.float32), 5, None, "NaN"),
    (np.ones((1, 16), np.float32), 0, None, "k must be"),
    (np.ones((1, 16), np.float32), 5, 0, "nprobe must be"),
])
def test_bad_queries_are_input_errors(loaded, queries, k, nprobe, message):
    with pytest.raises(InputError, match=message):
        loaded.search(queries, k, nprobe=nprobe)


def test_exact_rerank_lifts_pq_recall(tmp_path, corpus):
    queries = corpus.vectors[:100]
    _, truth = exact(corpus, queries, 20)
    results = {}
    for rerank in (False, True):
        index_dir = tmp_path / f"pq-{rerank}"
        jobs.build_job(str(index_dir), corpus.url, BuildConfig(factory="PQ4", nlist=8, rerank=rerank))
        loaded = IndexStore(index_dir).load(hold=False)
        assert loaded.manifest["rerank"] is rerank and ("vectors.npy" in loaded.manifest["files"]) is rerank
        names = loaded.search(queries, 20, nprobe=8)[1]
        results[rerank] = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(names, truth)])
    assert results[False] < 0.8 < 0.95 <= results[True]


def test_model_version_check(loaded):
    loaded.require_model_version("m-test-1")
    with pytest.raises(InputError, match="model version 'm-test-1', not 'other'"):
        loaded.require_model_version("other")
