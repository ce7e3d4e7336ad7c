"""``i2i recall`` against a live server, and ``i2i serve`` as a process: start, serve, drain on SIGTERM."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import redis

from embedding.table import open_table
from i2i.app.cli import main as i2i_main
from recall_server.config import ServerConfig

from .conftest import MODEL, server_config

I2I = str(Path(sys.executable).parent / "i2i")


def test_recall_prints_a_table(corpus, start_server, capsys):
    running = start_server(server_config(corpus))
    code = i2i_main(["recall", "--server", running.target, "--history", "n001,n002", "--history", "gone", "--k", "4"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "note_id", "score", "source_note_id"]
    rows = [line.split() for line in lines[1:5]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert all(row[3] in ("n001", "n002") for row in rows)
    assert f"index_version={corpus.version} model_version=m1 results=4" in out
    assert "missing_history (1): gone" in out
    assert re.search(r"4 notes for 3 history notes from 127\.0\.0\.1:\d+ in [\d.]+ ms", out)


def test_recall_exit_codes(corpus, start_server, capsys):
    running = start_server(server_config(corpus, max_k=10))
    assert i2i_main(["recall", "--server", running.target, "--history", "n001", "--k", "11"]) == 2
    assert "INVALID_ARGUMENT: k=11 is above the server's limit max_k=10" in capsys.readouterr().err
    assert i2i_main(["recall", "--server", "127.0.0.1:1", "--history", "n001", "--timeout", "1"]) == 75  # retry later
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert i2i_main(["recall", "--server", running.target]) == 2


def test_serve_refuses_bad_options(corpus, capsys):
    assert i2i_main(["serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url, "--merge", "avg"]) == 2
    assert "--merge" in capsys.readouterr().err
    assert i2i_main(["serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                     "--tls-cert", "cert.pem"]) == 2
    assert "TLS needs both --tls-cert and --tls-key" in capsys.readouterr().err
    assert i2i_main(["serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                     "--neighbour-cache-mb", "-1"]) == 2
    assert "--neighbour-cache-mb must be 0 (off) or positive" in capsys.readouterr().err
    assert i2i_main(["serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                     "--workers", "-1"]) == 2
    assert "--workers must be 0 (by table) or positive, got -1" in capsys.readouterr().err


def test_request_threads_follow_the_table_unless_given(corpus):
    """One thread for a Parquet table (a request never waits), two for Redis (lookups wait on the network)."""
    redis_url = "redis://127.0.0.1:6379/0"
    assert corpus.table_url.startswith("parquet:")
    assert server_config(corpus).request_threads == 1
    assert ServerConfig(index_dir=str(corpus.index_dir), table_url=redis_url).request_threads == 2
    assert server_config(corpus, workers=3).request_threads == 3
    assert ServerConfig(index_dir=str(corpus.index_dir), table_url=redis_url, workers=1).request_threads == 1


def test_serve_process_drains_requests_in_flight_on_sigterm(corpus, redis_server, tmp_path):
    url = f"{redis_server.url}?socket_timeout=10"
    with open_table(url) as table:
        table.put_many(corpus.note_ids, corpus.vectors, MODEL)
    process = subprocess.Popen(
        [I2I, "serve", "--index-dir", str(corpus.index_dir), "--table", url, "--port", "0", "--grace", "5",
         "--table-timeout", "10", "--wait-for-index", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = process.stdout.readline()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", first)
        assert match, first + process.stderr.read() if process.poll() is not None else first
        assert "threads=2" in first  # a Redis table: one thread works while another waits on the network
        from recall_server.client import ClientConfig, RecallClient

        client = RecallClient(ClientConfig(target=match.group(1), timeout_seconds=10))
        assert len(client.recall(["n001"], k=3).notes) == 3
        admin = redis.Redis.from_url(redis_server.url)
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # holds the next lookup for 1.5 s
        outcome: dict = {}

        def in_flight():
            try:
                outcome["notes"] = len(client.recall(["n002"], k=5).notes)
            except grpc.RpcError as exc:
                outcome["error"] = exc.code()

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.4)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.7)  # the server has stopped taking calls; the paused one is still running
        late = RecallClient(ClientConfig(target=match.group(1), timeout_seconds=2))
        with pytest.raises(grpc.RpcError) as caught:
            late.recall(["n003"], k=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        thread.join(timeout=10)
        assert outcome == {"notes": 5}
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        assert re.search(r"stopped after [\d.]+ s: 2 requests \(2 ok, 0 errors\), index v000001", out), out
        assert '"event":"server_draining"' in err
        client.close()
        late.close()
        admin.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
