"""Property-based fuzzing of RecallRequest fields against a real server over a real gRPC channel.

Whatever the fields hold, the answer is OK or INVALID_ARGUMENT (exactly when the contract says the
request is invalid), never UNKNOWN or INTERNAL, and an OK answer holds at most k distinct notes.
"""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from embedding.table import open_table
from index import jobs
from index.builder import BuildConfig
from recall_server.client import ClientConfig, RecallClient
from recall_server.config import ServerConfig
from recall_server.server import RecallServer
from recall_server.stubs import recall_pb2

from .conftest import unit_rows

MODEL = "m-test"
NOTES = [f"n{i:04d}" for i in range(400)]
MAX_K, MAX_PER_QUERY_K, MAX_HISTORY = 200, 500, 20
INT32 = st.integers(min_value=-2**31, max_value=2**31 - 1)
PROTO_TEXT = st.characters(exclude_categories=("Cs",))  # protobuf strings are UTF-8: no lone surrogates


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-recall")
    table_url = f"parquet:{root / 'table'}"
    with open_table(table_url) as table:
        table.put_many(NOTES, unit_rows(np.random.default_rng(8), len(NOTES)), MODEL)
    jobs.build_job(str(root / "index"), table_url, BuildConfig(nlist=8))
    config = ServerConfig(index_dir=str(root / "index"), table_url=table_url, port=0, max_k=MAX_K,
                          max_per_query_k=MAX_PER_QUERY_K, max_history=MAX_HISTORY, grace_seconds=0).validate()
    running = RecallServer(config).start()
    assert running.holder.wait_loaded(30)
    client = RecallClient(ClientConfig(target=f"127.0.0.1:{running.port}", max_message_bytes=8 * 1024 * 1024))
    yield client
    client.close()
    running.stop(grace=0)


note_ids = st.one_of(
    st.sampled_from(NOTES),
    st.sampled_from(["", " ", "\t\n", "\u3000", "unknown", "n9999", "N0001", "n0001 ", "\x00"]),
    st.text(PROTO_TEXT, max_size=20),
    st.text(PROTO_TEXT, min_size=2000, max_size=6000),  # huge ids
)
BOUNDARIES = st.sampled_from([0, 1, -1, MAX_K, MAX_K + 1, MAX_PER_QUERY_K, MAX_PER_QUERY_K + 1, 2**31 - 1, -2**31])
# About half of the draws are in range, so the OK path is exercised as much as the refusals.
ks = st.one_of(st.integers(min_value=1, max_value=MAX_K), st.integers(min_value=1, max_value=20), INT32, BOUNDARIES)
per_query_ks = st.one_of(st.just(0), st.integers(min_value=0, max_value=MAX_PER_QUERY_K), INT32, BOUNDARIES)
requests = st.fixed_dictionaries(
    {"history": st.one_of(st.lists(note_ids, max_size=8), st.lists(st.sampled_from(NOTES), min_size=1, max_size=60)),
     "k": ks, "per_query_k": per_query_ks, "user_id": st.text(PROTO_TEXT, max_size=30)},
    optional={"exclude_history": st.booleans()},
)


def contract_says_invalid(fields: dict) -> bool:
    """CONTRACTS.md and the server's documented limits: when INVALID_ARGUMENT is the answer."""
    history, k, per_query_k = fields["history"], fields["k"], fields["per_query_k"]
    return (not history or k <= 0 or k > MAX_K or per_query_k < 0 or per_query_k > MAX_PER_QUERY_K
            or any(not note_id.strip() for note_id in history))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=requests)
def test_any_request_gets_ok_or_invalid_argument_and_at_most_k_notes(server, fields):
    request = recall_pb2.RecallRequest(**fields)
    try:
        response = server.stub.Recall(request, timeout=10)
    except grpc.RpcError as exc:
        event(exc.code().name)
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        assert contract_says_invalid(fields), exc.details()
        assert exc.details()  # the message says what is wrong
        return
    event("OK")
    assert not contract_says_invalid(fields)
    returned = [note.note_id for note in response.notes]
    assert len(returned) <= fields["k"] and len(set(returned)) == len(returned)
    assert set(returned) <= set(NOTES)
    history = fields["history"]
    if fields.get("exclude_history", True):
        assert not set(returned) & set(history)
    assert set(response.missing_history) <= set(history) - set(NOTES)
    scores = [note.score for note in response.notes]
    assert scores == sorted(scores, reverse=True)
