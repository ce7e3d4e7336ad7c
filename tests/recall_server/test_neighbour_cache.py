"""The neighbour cache over a real gRPC channel: exact answers from cached lists, re-embeds, index swaps."""
from __future__ import annotations

import time

import numpy as np

from embedding.table import open_table

from .conftest import MODEL, publish_index, server_config
from .test_service import brute_force


def hits_and_misses(running) -> tuple[float, float]:
    value = running.server.metrics.value
    return value("i2i_recall_neighbour_cache_hits_total"), value("i2i_recall_neighbour_cache_misses_total")


def names(response) -> list[tuple[str, str]]:
    return [(note.note_id, note.source_note_id) for note in response.notes]


def expected(corpus, history, k) -> list[tuple[str, str]]:
    return [(note_id, source) for note_id, _, source in brute_force(corpus, history, k)]


HISTORIES = [(["n090", "n091", "n092", "n093", "n094", "n095", "n096", "n097"], 150),  # shallow, then deeper
             (["n120", "n121", "n122"], 280), ([f"n{i:03d}" for i in range(200, 240)], 60), (["n005"], 12)]


def test_cached_lists_give_the_exact_answer_again(corpus, start_server):
    running = start_server(server_config(corpus))
    client = running.client()
    for history, k in HISTORIES:
        assert names(client.recall(history, k=k)) == expected(corpus, history, k)
    hits, misses = hits_and_misses(running)
    assert hits == 0 and misses > 0
    for history, k in HISTORIES:  # the same histories again: answered from the cache, still exact
        assert names(client.recall(history, k=k)) == expected(corpus, history, k)
    assert hits_and_misses(running)[0] >= misses


def test_exclusions_on_cached_lists_stay_exact(corpus, start_server):
    """A cached list is unfiltered: notes a request excludes are dropped afterwards, and a row that lost
    notes it needed is searched again with the filter inside the scan."""
    running = start_server(server_config(corpus))
    client = running.client()
    history = ["n040", "n041"]
    client.recall(history, k=30)  # fills the cache for these notes
    top = [note_id for note_id, _ in expected(corpus, history, 40)]
    exclude = top[:25]  # most of what the cached lists hold
    response = client.recall(history, k=30, exclude=exclude)
    kept = [(note_id, source) for note_id, _, source in brute_force(corpus, history, 300) if note_id not in exclude]
    assert names(response) == kept[:30]
    kept_history = client.recall(["n007"], k=10, exclude_history=False)  # the note itself comes first
    assert kept_history.notes[0].note_id == "n007"
    assert running.server.metrics.value("i2i_recall_deeper_searches_total") > 0
    assert hits_and_misses(running)[0] > 0


def test_the_cache_changes_no_answer(corpus, start_server):
    cached = start_server(server_config(corpus)).client()
    uncached = start_server(server_config(corpus, neighbour_cache_mb=0)).client()
    rng = np.random.default_rng(3)
    for _ in range(2):
        for size, k in ((1, 5), (4, 40), (20, 100), (50, 200)):
            history = [corpus.note_ids[i] for i in rng.choice(len(corpus.note_ids), size, replace=False)]
            for _repeat in range(2):
                with_cache, without = cached.recall(history, k=k), uncached.recall(history, k=k)
                assert names(with_cache) == names(without)
                assert [n.score for n in with_cache.notes] == [n.score for n in without.notes]


def test_a_re_embedded_note_is_searched_with_its_new_vector(corpus, start_server):
    running = start_server(server_config(corpus))
    client = running.client()
    before = client.recall(["n010"], k=8)
    assert names(before) == expected(corpus, ["n010"], 8)
    new_vector = corpus.vector("n250")  # n010 now means what n250 means
    with open_table(corpus.table_url) as table:
        table.put_many(["n010"], new_vector[None, :], MODEL)
    _, misses = hits_and_misses(running)
    after = client.recall(["n010"], k=8)
    scores = corpus.vectors @ new_vector
    order = [i for i in np.argsort(-scores, kind="stable") if corpus.note_ids[i] != "n010"][:8]
    assert [note.note_id for note in after.notes] == [corpus.note_ids[i] for i in order]
    assert hits_and_misses(running)[1] == misses + 1  # a new vector is a new key


def test_an_index_swap_starts_an_empty_cache(corpus, start_server):
    running = start_server(server_config(corpus))
    client = running.client()
    client.recall(["n020", "n021"], k=10)
    client.recall(["n020", "n021"], k=10)
    hits, misses = hits_and_misses(running)
    assert hits == 2
    version = publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors)
    deadline = time.monotonic() + 10
    while running.server.holder.current.version != version and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.server.holder.current.version == version
    response = client.recall(["n020", "n021"], k=10)
    assert response.index_version == version
    assert hits_and_misses(running) == (hits, misses + 2)  # searched again on the new version
