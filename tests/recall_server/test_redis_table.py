"""A server reading history from a real Redis: outages answer UNAVAILABLE in time and heal by themselves.

"In time" is a status check: a call the server did not answer before the caller's deadline ends in
DEADLINE_EXCEEDED, so UNAVAILABLE proves the server's own answer came first. How long the answer
takes is measured by bench/redis_outage.py.
"""
from __future__ import annotations

import time

import grpc
import pytest
import redis

from embedding.table import open_table

from .conftest import MODEL, server_config


def fill(url: str, corpus) -> None:
    with open_table(url) as table:
        table.put_many(corpus.note_ids, corpus.vectors, MODEL)


@pytest.fixture
def redis_running_server(corpus, redis_server, start_server):
    url = f"{redis_server.url}?socket_timeout=5&socket_connect_timeout=1"
    fill(url, corpus)
    config = server_config(corpus, table_timeout_seconds=0.5)
    config.table_url = url
    return start_server(config), url


def recall_status(client, timeout: float) -> grpc.StatusCode:
    try:
        client.recall(["n001", "n002"], k=5, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_redis_stopped_is_unavailable_within_the_deadline_and_recovers(corpus, redis_server, redis_running_server):
    running, url = redis_running_server
    client = running.client()
    ok = client.recall(["n001", "n002"], k=5)
    assert len(ok.notes) == 5 and ok.index_version == corpus.version
    redis_server.stop()
    assert recall_status(client, timeout=3.0) == grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED
    redis_server.start()  # same port, empty (no persistence): the embedding job refills it
    fill(url, corpus)
    assert recall_status(client, timeout=3.0) == grpc.StatusCode.OK  # the same server process, never restarted
    assert running.server.metrics.value("i2i_recall_errors_total", {"code": "UNAVAILABLE"}) == 1


def test_hung_redis_answers_unavailable_before_the_callers_deadline(corpus, redis_server, redis_running_server):
    running, _ = redis_running_server
    client = running.client()
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis accepts but does not answer
    # The server's table budget (0.5 s) ends the lookup well before a 1.5 s deadline.
    assert recall_status(client, timeout=1.5) == grpc.StatusCode.UNAVAILABLE
    # A caller with a shorter deadline than that budget still learns why, instead of a bare DEADLINE_EXCEEDED.
    assert recall_status(client, timeout=0.3) == grpc.StatusCode.UNAVAILABLE
    time.sleep(1.6)
    assert recall_status(client, timeout=3.0) == grpc.StatusCode.OK
    admin.close()
