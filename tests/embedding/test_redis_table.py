"""The Redis embedding table against real redis-server processes: standalone, password, TLS, cluster."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.connection

from embedding.table import DimensionMismatch, ModelVersionMismatch, TableUnavailable, open_table
from embedding.table.redis import RedisEmbeddingTable, RedisTableConfig
from i2i.core.errors import InputError
from tests.conftest import RedisServer, free_port, require_binary

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def table(redis_server) -> RedisEmbeddingTable:
    with open_table(redis_server.url + "?prefix=t") as opened:
        yield opened


def test_url_options_are_parsed_and_the_password_hidden():
    config = RedisTableConfig.from_url("rediss://:s3cret@db.local:6380/2?prefix=p&ttl=60&ssl_cert_reqs=none")
    assert (config.prefix, config.ttl_seconds, config.cluster) == ("p", 60, False)
    assert "s3cret" not in config.display_url and "s3cret" in config.connect_url
    assert "prefix" not in config.connect_url and "ssl_cert_reqs=none" in config.connect_url
    assert RedisTableConfig.from_url("redis+cluster://h:7000").cluster
    assert RedisTableConfig.from_url("redis://h:7000/0?cluster=1").cluster
    with pytest.raises(InputError, match="ttl='soon'"):
        RedisTableConfig.from_url("redis://h:1/0?ttl=soon")
    with pytest.raises(InputError, match="only database 0"):
        RedisTableConfig.from_url("redis+cluster://h:1/3")


def test_round_trip_stores_float32_bytes_under_prefixed_keys(table, redis_server):
    data = vectors(4)
    table.put_many(["a", "b", "c", "d"], data, "m:1")
    lookup = table.get_many(["d", "nope", "a"], "m:1")
    assert lookup.found_ids == ["d", "a"] and lookup.missing_ids == ["nope"]
    np.testing.assert_array_equal(lookup.vectors, data[[3, 0]])
    raw = redis.Redis.from_url(redis_server.url).get("t:m%3A1:b")
    assert raw == data[1].astype("<f4").tobytes()
    assert table.count("m:1") == 4 and table.model_versions() == ["m:1"]


def test_last_write_wins_and_scan_covers_each_id_once(table):
    ids = [f"n{i}" for i in range(2500)]
    table.put_many(ids, vectors(2500), "m1")
    table.put_many(["n7", "n7"], vectors(2, seed=1), "m1")
    np.testing.assert_array_equal(table.get_many(["n7"], "m1").vectors, vectors(2, seed=1)[1:])
    batches = list(table.scan("m1", batch_size=1000))
    assert [len(b) for b, _ in batches] == [1000, 1000, 500]
    scanned = {note_id: row for batch, matrix in batches for note_id, row in zip(batch, matrix)}
    assert len(scanned) == 2500 and table.count("m1") == 2500 and table.has_ids("m1") == set(ids)
    np.testing.assert_array_equal(scanned["n3"], vectors(2500)[3])


def test_lookup_of_50_ids_is_one_round_trip(table, monkeypatch):
    table.put_many([f"n{i}" for i in range(60)], vectors(60), "m1")
    sends = []
    original = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        lambda self, *args, **kw: (sends.append(1), original(self, *args, **kw))[1])
    lookup = table.get_many([f"n{i}" for i in range(50)], "m1")
    assert len(lookup.found_ids) == 50 and len(sends) == 1


def test_model_version_guard_and_dimension_check(table):
    assert table.get_many(["a"], "m1").missing_ids == ["a"]  # empty table: nothing to refuse
    table.put_many(["a"], vectors(1), "m1")
    with pytest.raises(ModelVersionMismatch, match="'m2'"):
        table.get_many(["a"], "m2")
    with pytest.raises(DimensionMismatch, match="16-dimensional"):
        table.put_many(["b"], np.zeros((1, 4), np.float32), "m1")
    table.put_many(["b"], np.zeros((1, 4), np.float32), "m2")  # another model may have another width
    assert table.model_versions() == ["m1", "m2"]


def test_delete_removes_vectors_and_then_the_version(table):
    table.put_many(["a", "b"], vectors(2), "m1")
    assert table.delete_many(["a", "zz"], "m1") == 1
    assert table.get_many(["a", "b"], "m1").missing_ids == ["a"] and table.count("m1") == 1
    assert table.delete_many(["b"], "m1") == 1
    assert table.model_versions() == []


def test_ttl_expires_vectors_and_their_ids(redis_server):
    with open_table(redis_server.url + "?prefix=ttl&ttl=1") as table:
        table.put_many(["a", "b"], vectors(2), "m1")
        assert table.count("m1") == 2
        assert 0 < table.client.pttl("ttl:m1:a") <= 1000
        time.sleep(1.2)
        assert table.count("m1") == 0 and list(table.scan("m1")) == []
        assert table.get_many(["a"], "m1").missing_ids == ["a"]


def test_unreachable_server_raises_table_unavailable_and_recovers(table, redis_server):
    table.put_many(["a"], vectors(1), "m1")
    redis_server.stop()
    with pytest.raises(TableUnavailable, match="unavailable"):
        table.get_many(["a"], "m1")
    redis_server.start()  # an empty server again: the lookup works and finds nothing
    assert table.get_many(["a"], "m1").missing_ids == ["a"]


def test_password_from_the_url(tmp_path):
    server = RedisServer(tmp_path, password="s3cret").start()
    try:
        with open_table(server.url) as table:
            table.put_many(["a"], vectors(1), "m1")
            assert table.count("m1") == 1
        wrong = server.url.replace("s3cret", "wrong")
        with pytest.raises(TableUnavailable, match="unavailable") as caught:
            open_table(wrong).count("m1")
        assert "wrong" not in str(caught.value)
    finally:
        server.stop()


@pytest.fixture
def tls_server(tmp_path):
    binary, openssl = require_binary("redis-server"), require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=open(tmp_path / "redis.log", "wb"), stderr=subprocess.STDOUT)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    deadline = time.monotonic() + 20
    while True:  # ready once a TLS client gets an answer; an exit is a failure that shows why
        if process.poll() is not None:
            pytest.fail(f"redis-server with TLS exited ({process.returncode}): {(tmp_path / 'redis.log').read_text()[-500:]}",
                        pytrace=False)
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server with TLS did not answer within 20 s", pytrace=False)
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_tls_from_the_url(tls_server):
    with open_table(tls_server) as table:
        table.put_many(["a"], vectors(1), "m1")
        np.testing.assert_array_equal(table.get_many(["a"], "m1").vectors, vectors(1))
    plain = tls_server.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(TableUnavailable, match="unavailable"):
        open_table(plain + "?socket_timeout=1").count("m1")


def cluster_node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port + 10000)) != 0:
                return port


class LocalCluster:
    """Three redis-server cluster nodes on loopback, joined with redis-cli --cluster create."""

    def __init__(self, workdir: Path) -> None:
        self.ports = [cluster_node_port() for _ in range(3)]
        self.processes = []
        try:
            self._start(workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path) -> None:
        for port in self.ports:
            node_dir = workdir / str(port)
            node_dir.mkdir()
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            _wait_for_port(port)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.ports[0]).cluster("info")
            if info.get("cluster_state") == "ok":
                return
            time.sleep(0.2)
        raise RuntimeError("the local cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_binary("redis-server"), require_binary("redis-cli")
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    yield local
    local.stop()


def test_redis_cluster_spreads_vectors_and_answers_like_standalone(cluster):
    ids = [f"n{i}" for i in range(300)]
    data = vectors(300)
    with open_table(f"redis+cluster://127.0.0.1:{cluster.ports[0]}/0?prefix=c") as table:
        table.put_many(ids, data, "m1")
        lookup = table.get_many(ids[:50] + ["missing"], "m1")
        assert lookup.found_ids == ids[:50] and lookup.missing_ids == ["missing"]
        np.testing.assert_array_equal(lookup.vectors, data[:50])
        assert table.count("m1") == 300 and table.model_versions() == ["m1"]
        assert sum(len(batch) for batch, _ in table.scan("m1", batch_size=128)) == 300
        assert table.delete_many(ids[:10], "m1") == 10 and table.count("m1") == 290
        with pytest.raises(ModelVersionMismatch, match="no embeddings for model version .m2."):
            table.get_many(["n1"], "m2")
    keys_per_node = [redis.Redis(port=port).dbsize() for port in cluster.ports]
    assert sum(1 for n in keys_per_node if n > 50) == 3, keys_per_node
    with open_table(f"redis://127.0.0.1:{cluster.ports[1]}/0?cluster=1&prefix=c") as other_entry:
        assert other_entry.count("m1") == 290
