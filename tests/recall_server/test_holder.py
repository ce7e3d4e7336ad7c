"""Hot reload of the served index: swaps under traffic, failed loads, the model-version guard, health."""
from __future__ import annotations

import gc
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index.store import IndexStore

from .conftest import publish_index, server_config, unit_rows


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def health_status(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="i2i.v1.RecallService"),
                                                         timeout=5).status


def test_reload_under_continuous_traffic_fails_no_request(corpus, start_server):
    running = start_server(server_config(corpus, workers=4))
    seen: list[list[str]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic(slot: int) -> None:
        client = running.client()
        while not stop.is_set():
            try:
                response = client.recall(["n001", "n002", "n003"], k=10)
                seen[slot].append(response.index_version)
                assert len(response.notes) == 10
            except BaseException as exc:  # any failure at all fails the test
                errors.append(exc)
                return

    threads = [threading.Thread(target=traffic, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    rng = np.random.default_rng(11)
    new_ids = [f"x{i:03d}" for i in range(200)]
    # v2 adds notes; v3 drops them again: two swaps while requests keep flowing.
    v2 = publish_index(corpus.index_dir, corpus.note_ids + new_ids,
                       np.vstack([corpus.vectors, unit_rows(rng, len(new_ids))]))
    assert wait_for(lambda: running.server.holder.current.version == v2)
    time.sleep(0.3)
    v3 = publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors)
    assert wait_for(lambda: running.server.holder.current.version == v3)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    for versions in seen:
        assert versions, "a client thread got no responses"
        # Each client sees versions in publication order, and the swap does not go back.
        order = [corpus.version, v2, v3]
        ranks = [order.index(version) for version in versions]
        assert ranks == sorted(ranks)
    assert {corpus.version, v2, v3} <= {version for versions in seen for version in versions}
    assert running.server.holder.loads_ok == 3
    assert running.server.metrics.value("i2i_recall_index_reloads_total", {"outcome": "ok"}) == 3


def test_failed_load_keeps_the_old_index_and_is_counted(corpus, start_server):
    running = start_server(server_config(corpus, reload_retry_seconds=60))
    store = IndexStore(corpus.index_dir)
    broken = publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors, make_current=False)
    index_file = store.version_dir(broken) / "index.faiss"
    data = bytearray(index_file.read_bytes())
    data[-10] ^= 0xFF
    index_file.write_bytes(bytes(data))
    store.set_current(broken)
    assert wait_for(lambda: running.server.holder.loads_failed == 1)
    client = running.client()
    assert client.recall(["n001"], k=3).index_version == corpus.version
    assert running.server.metrics.value("i2i_recall_index_reloads_total", {"outcome": "failed"}) == 1
    time.sleep(0.3)  # within the retry delay the broken version is not loaded again
    assert running.server.holder.loads_failed == 1
    good = publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors)
    assert wait_for(lambda: running.server.holder.current.version == good)
    assert client.recall(["n001"], k=3).index_version == good


def test_index_of_another_model_version_is_refused(corpus, start_server):
    running = start_server(server_config(corpus, reload_retry_seconds=60))
    other = publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors, model_version="m2")
    assert wait_for(lambda: running.server.holder.loads_failed == 1)
    assert running.server.holder.current.version == corpus.version
    assert other != corpus.version
    response = running.client().recall(["n001"], k=3)
    assert response.index_version == corpus.version and response.model_version == "m1"


def test_health_turns_serving_once_the_first_index_loads(corpus, start_server, tmp_path):
    index_dir = tmp_path / "later-index"
    index_dir.mkdir()
    config = server_config(corpus)
    config.index_dir = str(index_dir)
    running = start_server(config, wait=False)
    assert health_status(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING
    publish_index(index_dir, corpus.note_ids, corpus.vectors)
    assert wait_for(lambda: health_status(running.target) == health_pb2.HealthCheckResponse.SERVING)
    assert len(running.client().recall(["n001"], k=4).notes) == 4


def test_reload_follows_a_rollback(corpus, start_server):
    running = start_server(server_config(corpus))
    v2 = publish_index(corpus.index_dir, corpus.note_ids[:100], corpus.vectors[:100])
    assert wait_for(lambda: running.server.holder.current.version == v2)
    IndexStore(corpus.index_dir).rollback(corpus.version)
    assert wait_for(lambda: running.server.holder.current.version == corpus.version)
    assert running.client().recall(["n150"], k=3).index_version == corpus.version


def test_a_loaded_version_and_the_table_rows_are_out_of_the_collectors_sight(corpus, start_server):
    """The heap is settled before a swap: otherwise the first full collection after a load traverses
    the id map and every table row while requests wait (100-150 ms for 1M notes)."""
    running = start_server(server_config(corpus))
    assert len(running.client().recall(["n001"], k=3).notes) == 3
    served = running.server.holder.current
    rows = running.server.table._cache[served.model_version]  # the Parquet table's rows, read at load
    long_lived = [rows.ids, served.index.ids]
    assert all(gc.is_tracked(item) for item in long_lived)  # containers the collector would traverse
    in_sight = {id(item) for item in gc.get_objects()}
    assert not any(id(item) in in_sight for item in long_lived)
    assert gc.get_freeze_count() > 0

    # A new version is settled too: its id map is as far out of sight as the first one's was.
    publish_index(corpus.index_dir, corpus.note_ids, corpus.vectors)
    assert wait_for(lambda: running.server.holder.current.version != served.version)
    in_sight = {id(item) for item in gc.get_objects()}
    assert id(running.server.holder.current.index.ids) not in in_sight

    running.server.stop(0)  # a stopped server hands them back, so the process's exit frees them as usual
    assert gc.get_freeze_count() == 0
