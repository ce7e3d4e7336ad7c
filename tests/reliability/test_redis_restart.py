"""Redis restarted under load: an ``i2i serve`` process reading its history embeddings from Redis
answers UNAVAILABLE (well inside the caller's deadline) while Redis is down, and heals by itself
once Redis is back: the same process, never restarted.
"""
from __future__ import annotations

import time

import numpy as np
import redis

from embedding.table import open_table
from i2i.testing.serving import ServerProcess, free_port
from index import jobs
from index.builder import BuildConfig

from .conftest import Traffic, scrape, unit_rows, wait_until

MODEL = "m-test"
DEADLINE = 3.0  # each client call's deadline
TABLE_TIMEOUT = 0.5  # the server's budget for one history lookup


def test_redis_restart_under_load_is_unavailable_then_heals_without_a_server_restart(tmp_path, redis_server):
    rng = np.random.default_rng(4)
    note_ids = [f"n{i:04d}" for i in range(600)]
    url = f"{redis_server.url}?socket_timeout=1&socket_connect_timeout=0.5"
    with open_table(url) as table:
        table.put_many(note_ids, unit_rows(rng, len(note_ids)), MODEL)
    index_dir = tmp_path / "index"
    jobs.build_job(str(index_dir), url, BuildConfig(nlist=8))
    metrics_port = free_port()
    histories = [note_ids[i:i + 4] for i in range(0, 400, 4)]
    server = ServerProcess(index_dir, url, ["--table-timeout", str(TABLE_TIMEOUT), "--workers", "8",
                                            "--metrics-port", str(metrics_port)])
    with server:
        pid = server.process.pid
        with Traffic(server.address, histories, k=10, threads=4, timeout=DEADLINE) as traffic:
            assert traffic.wait_for("OK", 30)
            phases = {}

            # 1. Redis goes away with its data saved, and comes back with it (RDB on restart).
            redis.Redis.from_url(redis_server.url).save()
            redis_server.stop()
            assert traffic.wait_for("UNAVAILABLE", 30), traffic.snapshot()
            time.sleep(1.0)  # stay down for a while under load
            phases["down"] = traffic.snapshot()
            redis_server.start()
            ok_before = phases["down"].get("OK", 0)
            assert wait_until(lambda: traffic.snapshot().get("OK", 0) >= ok_before + 30, timeout=30), traffic.snapshot()
            _, returned = traffic.seen()
            assert returned  # real results again, from the restored data
            phases["restored"] = traffic.snapshot()

            # 2. Redis comes back empty (no persistence): every call is answered, with the history
            # reported missing, until the embedding job refills the table.
            redis_server.stop()
            (redis_server.workdir / "dump.rdb").unlink()
            assert traffic.wait_for("UNAVAILABLE", phases["restored"].get("UNAVAILABLE", 0) + 5, 30)
            redis_server.start()
            assert wait_until(lambda: answered_empty(server, histories[0]), timeout=30)
            with open_table(url) as table:
                table.put_many(note_ids, unit_rows(np.random.default_rng(4), len(note_ids)), MODEL)
            response = server.recall(histories[0], 10)
            assert len(response.notes) == 10 and not response.missing_history
            traffic_ok = traffic.snapshot().get("OK", 0)
            assert wait_until(lambda: traffic.snapshot().get("OK", 0) >= traffic_ok + 20, timeout=30)
        codes = dict(traffic.codes)
        print(f"\noutcomes by status code: {codes}; slowest call {traffic.slowest:.3f}s; phases {phases}")
        # Never UNKNOWN or INTERNAL, and never DEADLINE_EXCEEDED: no call hung until its deadline.
        assert set(codes) == {"OK", "UNAVAILABLE"}, codes
        assert server.process.poll() is None and server.process.pid == pid  # the same server process
        served_unavailable = scrape(metrics_port, "i2i_recall_requests_total", {"code": "UNAVAILABLE"})
        assert served_unavailable == codes["UNAVAILABLE"]  # each one was the server's answer, not the transport's


def answered_empty(server: ServerProcess, history: list[str]) -> bool:
    """True when the server answers OK with the whole history reported missing."""
    import grpc

    try:
        response = server.recall(history, 10, timeout=DEADLINE)
    except grpc.RpcError:
        return False
    return not response.notes and list(response.missing_history) == history
