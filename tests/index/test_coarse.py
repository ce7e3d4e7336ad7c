"""The BLAS coarse assignment against FAISS's own quantizer, and probes reused for deeper searches."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest

from index import jobs
from index.builder import BuildConfig
from index.coarse import ARGMAX_UP_TO, FlatCoarse
from index.native_threads import limit_omp_threads
from index.store import IndexStore


@pytest.mark.parametrize("metric", [faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2])
@pytest.mark.parametrize("nprobe", [1, 3, ARGMAX_UP_TO, ARGMAX_UP_TO + 1, 100, 256])
def test_flat_coarse_picks_the_lists_faiss_picks(metric, nprobe):
    rng = np.random.default_rng(nprobe)
    centroids = rng.standard_normal((256, 24)).astype(np.float32)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    quantizer = faiss.IndexFlatIP(24) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(24)
    quantizer.add(centroids)
    expected_scores, expected_lists = quantizer.search(queries, nprobe)
    scores, lists = FlatCoarse(quantizer).search(queries, nprobe)
    np.testing.assert_array_equal(lists, expected_lists)  # same lists, same order (best first)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
    assert scores.dtype == np.float32 and lists.dtype == np.int64


@pytest.fixture
def loaded(tmp_path, corpus):
    jobs.build_job(str(tmp_path / "idx"), corpus.url, BuildConfig(nlist=16, default_nprobe=4))
    return IndexStore(tmp_path / "idx").load(hold=False)


def test_a_probe_reused_for_some_rows_gives_what_a_fresh_search_gives(loaded, corpus):
    queries = corpus.vectors[::37]
    probe = loaded.probe(queries, 3)
    rows = np.array([0, 4, 5, len(queries) - 1])
    deep_scores, deep_labels = loaded.search_probe(probe.rows(rows), 40)
    fresh_scores, fresh_labels = loaded.search_labels(queries[rows], 40, nprobe=3)
    np.testing.assert_array_equal(deep_labels, fresh_labels)
    np.testing.assert_array_equal(deep_scores, fresh_scores)


def test_the_index_flat_quantizer_and_faiss_agree_on_whole_searches(loaded, corpus):
    queries = np.ascontiguousarray(corpus.vectors[::11])
    params = faiss.SearchParametersIVF(nprobe=5)
    faiss_scores, faiss_labels = loaded.index.search(queries, 20, params=params)
    scores, labels = loaded.search_labels(queries, 20, nprobe=5)
    np.testing.assert_array_equal(labels, faiss_labels)
    np.testing.assert_allclose(scores, faiss_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or "OMP_NUM_THREADS" in os.environ,
                    reason="OpenMP's default is already one thread")
def test_the_openmp_limit_is_a_setting_of_each_thread():
    limit_omp_threads(1)  # on this thread only
    with ThreadPoolExecutor(max_workers=1) as plain:
        default = plain.submit(faiss.omp_get_max_threads).result()
    with ThreadPoolExecutor(max_workers=1, initializer=limit_omp_threads, initargs=(1,)) as limited:
        capped = limited.submit(faiss.omp_get_max_threads).result()
    assert faiss.omp_get_max_threads() == 1 and capped == 1
    assert default > 1  # a pool thread without the initializer would start an OpenMP team
