"""Server wiring over real channels: bearer-token auth, TLS, reflection and the Prometheus endpoint."""
from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recall_server.auth import bearer_token
from recall_server.stubs import recall_pb2

from .conftest import server_config


def test_bearer_token_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", b"bearer  xyz ")]) == "xyz"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert bearer_token(None) is None


def test_calls_without_a_valid_token_are_unauthenticated(corpus, start_server):
    running = start_server(server_config(corpus, auth_tokens=("s3cret", "other-token")))
    for client in (running.client(), running.client(token="wrong")):
        with pytest.raises(grpc.RpcError) as caught:
            client.recall(["n001"], k=3)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(running.client(token="s3cret").recall(["n001"], k=3).notes) == 3
    assert len(running.client(token="other-token").recall(["n001"], k=3).notes) == 3
    # Health probes need no token; reflection does.
    with grpc.insecure_channel(running.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=5))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    rejected = running.server.metrics.value("i2i_recall_unauthenticated_total",
                                            {"method": "/i2i.v1.RecallService/Recall"})
    assert rejected == 2


def test_tls_serves_verified_clients_only(corpus, start_server, tls_files):
    cert, key = tls_files
    running = start_server(server_config(corpus, tls_cert=str(cert), tls_key=str(key), auth_tokens=("t0k",)))
    secure = running.client(tls_ca=str(cert), token="t0k")
    response = secure.recall(["n001"], k=3)
    assert len(response.notes) == 3
    with pytest.raises(grpc.RpcError) as caught:
        running.client(token="t0k", timeout_seconds=2).recall(["n001"], k=3)  # plaintext to a TLS port
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_reflection_lists_the_services(corpus, start_server):
    running = start_server(server_config(corpus))
    with grpc.insecure_channel(running.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=5))
    names = {service.name for service in answers[0].list_services_response.service}
    assert {"i2i.v1.RecallService", "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_counts_requests_errors_and_the_index(corpus, start_server):
    running = start_server(server_config(corpus, metrics_port=0, max_k=10))
    client = running.client()
    client.recall(["n001", "missing"], k=5)
    with pytest.raises(grpc.RpcError):
        client.recall(["n001"], k=11)
    port = running.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'i2i_recall_requests_total{code="OK"} 1.0' in text
    assert 'i2i_recall_errors_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert "i2i_recall_latency_seconds_count 2.0" in text
    assert f'i2i_recall_index_info{{index_version="{corpus.version}",model_version="m1"}} 1.0' in text
    assert 'i2i_recall_index_reloads_total{outcome="ok"} 1.0' in text
    assert "i2i_recall_missing_history_total 1.0" in text


@pytest.mark.parametrize("payload, what", [
    (b"\xff\xff\xff\xff", "garbage"),
    (recall_pb2.RecallRequest(user_id="u", history=["n001", "n002"], k=5).SerializeToString()[:-4], "truncated"),
    (b"\x12\x02\xff\xfe\x18\x05", "invalid UTF-8 in history"),
])
def test_malformed_request_bytes_are_invalid_argument_and_counted(corpus, start_server, payload, what):
    running = start_server(server_config(corpus, metrics_port=0))
    with grpc.insecure_channel(running.target) as channel:
        raw = channel.unary_unary("/i2i.v1.RecallService/Recall", request_serializer=None,
                                  response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            raw(payload, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert "not a valid i2i.v1.RecallRequest" in caught.value.details()
        good = recall_pb2.RecallRequest(history=["n001"], k=3).SerializeToString()
        answer = recall_pb2.RecallResponse.FromString(raw(good, timeout=5))  # the same raw path still serves
        assert len(answer.notes) == 3
    text = urllib.request.urlopen(f"http://127.0.0.1:{running.server.metrics_port}/metrics", timeout=5).read().decode()
    assert "i2i_recall_malformed_requests_total 1.0" in text
    assert 'i2i_recall_errors_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert 'i2i_recall_requests_total{code="OK"} 1.0' in text


def scrape(running) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{running.server.metrics_port}/metrics", timeout=5).read().decode()


def test_standard_grpc_server_metrics_count_every_method_and_code(corpus, start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("secret\n")
    running = start_server(server_config(corpus, metrics_port=0, max_k=10, auth_tokens=("secret",)))
    client = running.client(token="secret")
    client.recall(["n001"], k=5)
    client.recall(["n002"], k=5)
    with pytest.raises(grpc.RpcError):
        client.recall(["n001"], k=11)
    with pytest.raises(grpc.RpcError):
        running.client().recall(["n001"], k=5)  # no token
    with grpc.insecure_channel(running.target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    text = scrape(running)
    recall = 'grpc_method="Recall",grpc_service="i2i.v1.RecallService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{recall}}} 4.0" in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{recall}}} 2.0' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{recall}}} 1.0' in text
    assert f'grpc_server_handled_total{{grpc_code="UNAUTHENTICATED",{recall}}} 1.0' in text
    assert f"grpc_server_handling_seconds_count{{{recall}}} 4.0" in text
    health = 'grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{health}}} 1.0' in text
    assert 'i2i_recall_requests_total{code="OK"} 2.0' in text  # the project's own, beside them


def test_freshness_gauges_follow_the_table(corpus, start_server):
    import time

    from embedding.table import open_table

    before = time.time()
    running = start_server(server_config(corpus, metrics_port=0, freshness_interval_seconds=0.1))
    deadline = time.time() + 10
    while "i2i_recall_table_notes_not_indexed 0.0" not in scrape(running) and time.time() < deadline:
        time.sleep(0.05)
    text = scrape(running)
    assert "i2i_recall_table_notes_not_indexed 0.0" in text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("i2i_recall_") and " " in line}
    assert 0 <= values["i2i_recall_index_age_seconds"] < 120
    newest = values["i2i_recall_index_newest_embedded_at_seconds"]
    assert before - 120 < newest <= values["i2i_recall_index_created_timestamp_seconds"] + 1
    rng = __import__("numpy").random.default_rng(3)
    fresh = rng.standard_normal((5, corpus.vectors.shape[1])).astype("float32")
    with open_table(corpus.table_url) as table:
        table.put_many([f"new{i}" for i in range(5)], fresh, "m1")
    deadline = time.time() + 10
    while "i2i_recall_table_notes_not_indexed 5.0" not in scrape(running) and time.time() < deadline:
        time.sleep(0.05)
    assert "i2i_recall_table_notes_not_indexed 5.0" in scrape(running)
    # One note in, one indexed note out between two checks: the table's count stays, its newest
    # write moves, and the count of notes not indexed (only redone when something changed) follows.
    holder = running.server.holder
    holder.freshness_seconds = 3600.0  # no check by the watcher in between
    holder.refresh_freshness()
    with open_table(corpus.table_url) as table:
        table.put_many(["new5"], fresh[:1], "m1")
        assert table.delete_many(["n000"], "m1") == 1
    holder.refresh_freshness()
    assert "i2i_recall_table_notes_not_indexed 6.0" in scrape(running)
