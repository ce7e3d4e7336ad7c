"""RecallService over a real gRPC channel: exact top-k, merging, exclusion, limits and error codes."""
from __future__ import annotations

from dataclasses import replace

import grpc
import numpy as np
import pytest

from embedding.table import open_table
from recall_server.service import plan_request
from recall_server.stubs import recall_pb2

from .conftest import server_config


def brute_force(corpus, history, k, strategy="max", exclude=True):
    """Scores every note against every history note with numpy: the answer an exact index must give."""
    queries = np.stack([corpus.vector(note_id) for note_id in history])
    similarity = queries @ corpus.vectors.T  # (history, notes)
    combined = similarity.max(axis=0) if strategy == "max" else similarity.sum(axis=0)
    source = similarity.argmax(axis=0)
    order = [i for i in np.argsort(-combined, kind="stable") if not (exclude and corpus.note_ids[i] in history)]
    return [(corpus.note_ids[i], float(combined[i]), history[source[i]]) for i in order[:k]]


def call_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_top_k_equals_brute_force_on_an_exact_index(corpus, start_server):
    client = start_server(server_config(corpus)).client()
    history = ["n010", "n020", "n030", "n040", "n050"]
    response = client.recall(history, k=25, user_id="u1")
    expected = brute_force(corpus, history, 25)
    assert [note.note_id for note in response.notes] == [note_id for note_id, _, _ in expected]
    np.testing.assert_allclose([note.score for note in response.notes], [s for _, s, _ in expected], rtol=1e-5)
    assert [note.source_note_id for note in response.notes] == [source for _, _, source in expected]
    assert response.index_version == corpus.version and response.model_version == "m1"
    assert list(response.missing_history) == []


def test_sum_merge_equals_brute_force_when_every_list_is_complete(corpus, start_server):
    client = start_server(server_config(corpus, merge="sum")).client()
    history = ["n001", "n002", "n003"]
    response = client.recall(history, k=15, per_query_k=len(corpus.note_ids))
    expected = brute_force(corpus, history, 15, strategy="sum")
    assert [note.note_id for note in response.notes] == [note_id for note_id, _, _ in expected]
    np.testing.assert_allclose([note.score for note in response.notes], [s for _, s, _ in expected], rtol=1e-4)


def test_round_robin_gives_each_history_note_a_turn(corpus, start_server):
    client = start_server(server_config(corpus, merge="round_robin")).client()
    response = client.recall(["n100", "n200", "n250"], k=9)
    assert [note.source_note_id for note in response.notes] == ["n100", "n200", "n250"] * 3
    assert len({note.note_id for note in response.notes}) == 9


def test_history_is_excluded_unless_asked_to_keep_it(corpus, start_server):
    client = start_server(server_config(corpus)).client()
    history = ["n005", "n006"]
    excluded = client.recall(history, k=len(corpus.note_ids))
    assert not {note.note_id for note in excluded.notes} & set(history)
    assert len(excluded.notes) == len(corpus.note_ids) - len(history)
    kept = client.recall(history, k=3, exclude_history=False)
    # A note is its own nearest neighbour (unit vectors, inner product 1).
    assert {note.note_id for note in kept.notes[:2]} == set(history)
    assert all(note.note_id == note.source_note_id for note in kept.notes[:2])
    assert kept.notes[0].score == pytest.approx(1.0, abs=1e-5)


def test_missing_history_is_reported_and_the_rest_is_served(corpus, start_server):
    running = start_server(server_config(corpus))
    client = running.client()
    response = client.recall(["nope-1", "n010", "nope-2"], k=5)
    assert list(response.missing_history) == ["nope-1", "nope-2"]
    assert [n.note_id for n in response.notes] == [n for n, _, _ in brute_force(corpus, ["n010"], 5)]
    nothing = client.recall(["nope-3"], k=5)
    assert list(nothing.notes) == [] and list(nothing.missing_history) == ["nope-3"]
    assert running.server.metrics.value("i2i_recall_missing_history_total") == 3


def test_long_history_keeps_the_most_recent_notes(corpus, start_server):
    running = start_server(server_config(corpus, max_history=3))
    history = ["n011", "n012", "n013", "n014", "n015", "n016"]
    response = running.client().recall(history, k=20)
    assert {note.source_note_id for note in response.notes} <= set(history[:3])
    assert [n.note_id for n in response.notes] == [
        n for n, _, _ in brute_force(corpus, history[:3], 26) if n not in history][:20]
    assert running.server.metrics.value("i2i_recall_history_truncated_total") == 1


def test_history_beyond_max_history_is_still_excluded(corpus, start_server):
    """Only the most recent max_history notes are searched, but every history note is left out."""
    running = start_server(server_config(corpus, max_history=3))
    history = [f"n{i:03d}" for i in range(40, 52)]  # 12 notes, 9 beyond the limit
    everything = len(corpus.note_ids)
    response = running.client().recall(history, k=everything)
    returned = [note.note_id for note in response.notes]
    assert not set(returned) & set(history)
    assert len(returned) == everything - len(history)  # all the rest, each once
    assert {note.source_note_id for note in response.notes} <= set(history[:3])
    assert returned[:30] == [n for n, _, _ in brute_force(corpus, history[:3], 45) if n not in history][:30]


def test_history_note_in_the_index_but_not_in_the_table_is_still_excluded(corpus, start_server, tmp_path):
    """A note whose embedding is gone from the table is still in the index: it must not come back."""
    gone = "n061"
    table_url = f"parquet:{tmp_path / 'partial-table'}"
    keep = [i for i, note_id in enumerate(corpus.note_ids) if note_id != gone]
    with open_table(table_url) as table:
        table.put_many([corpus.note_ids[i] for i in keep], corpus.vectors[keep], "m1")
    config = replace(server_config(corpus), table_url=table_url)
    history = ["n060", gone]
    response = start_server(config).client().recall(history, k=len(corpus.note_ids))
    returned = [note.note_id for note in response.notes]
    assert list(response.missing_history) == [gone]
    assert gone not in returned and "n060" not in returned
    assert len(returned) == len(corpus.note_ids) - 2
    # The control: without exclusion the index does return it.
    kept = start_server(config).client().recall(history, k=len(corpus.note_ids), exclude_history=False)
    assert gone in {note.note_id for note in kept.notes}


@pytest.mark.parametrize(("history", "k", "per_query_k", "message"), [
    ([], 5, 0, "history is empty"),
    (["n001"], 0, 0, "k must be positive, got 0"),
    (["n001"], -3, 0, "k must be positive, got -3"),
    (["n001"], 51, 0, "k=51 is above the server's limit max_k=50"),
    (["n001"], 5, -1, "per_query_k must be 0"),
    (["n001"], 5, 101, "per_query_k=101 is above the server's limit max_per_query_k=100"),
    (["n001", " "], 5, 0, "history[1] is an empty note id"),
])
def test_invalid_requests_say_what_is_wrong(corpus, start_server, history, k, per_query_k, message):
    running = start_server(server_config(corpus, max_k=50, max_per_query_k=100))
    error = call_error(lambda: running.client().recall(history, k=k, per_query_k=per_query_k))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert running.server.metrics.value("i2i_recall_errors_total", {"code": "INVALID_ARGUMENT"}) == 1


def test_unavailable_while_no_index_is_loaded(corpus, start_server, tmp_path):
    empty = tmp_path / "empty-index"
    empty.mkdir()
    config = server_config(corpus)
    config.index_dir = str(empty)
    running = start_server(config, wait=False)
    error = call_error(lambda: running.client().recall(["n001"], k=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "no index loaded" in error.details()


def test_oversized_request_is_refused(corpus, start_server):
    running = start_server(server_config(corpus, max_message_bytes=2048))
    error = call_error(lambda: running.client().recall([f"note-{i:06d}" for i in range(500)], k=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_expired_deadline_is_reported_to_the_caller(corpus, start_server):
    client = start_server(server_config(corpus)).client()
    error = call_error(lambda: client.recall(["n001"], k=5, timeout=1e-6))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_default_per_query_k_makes_max_merging_exact():
    from recall_server.config import ServerConfig

    config = ServerConfig(index_dir=".", table_url="parquet:x")
    request = recall_pb2.RecallRequest(history=["a", "b", "a"], k=10)
    plan = plan_request(request, config)
    assert plan.queries == ["a", "b"] and plan.excluded == {"a", "b"} and plan.per_query_k == 10
    request.exclude_history = False
    assert plan_request(request, config).per_query_k == 10


def test_per_note_search_mode_returns_the_same_results(corpus, start_server):
    history = ["n021", "n022", "n023", "n024"]
    batched = start_server(server_config(corpus)).client().recall(history, k=30)
    per_note = start_server(server_config(corpus, search_mode="per_note")).client().recall(history, k=30)
    assert [n.note_id for n in per_note.notes] == [n.note_id for n in batched.notes]
    assert [n.source_note_id for n in per_note.notes] == [n.source_note_id for n in batched.notes]


def test_shallow_first_pass_with_deeper_rows_stays_exact(corpus, start_server):
    """k much larger than 2k/history: the first pass is shallow and saturated rows are searched again."""
    running = start_server(server_config(corpus))
    client = running.client()
    for history, k in ((["n090", "n091", "n092", "n093", "n094", "n095", "n096", "n097"], 150),
                       (["n120", "n121", "n122"], 280), ([f"n{i:03d}" for i in range(200, 240)], 60),
                       ([f"n{i:03d}" for i in range(250, 260)], 285)):
        response = client.recall(history, k=k)
        expected = brute_force(corpus, history, k)
        assert [note.note_id for note in response.notes] == [note_id for note_id, _, _ in expected]
        assert [note.source_note_id for note in response.notes] == [source for _, _, source in expected]
    assert running.server.metrics.value("i2i_recall_deeper_searches_total") > 0  # the second pass ran
