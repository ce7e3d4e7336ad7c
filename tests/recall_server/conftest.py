"""Fixtures for the recall server: tiny real FAISS index versions, Parquet tables, running servers."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np
import pytest

from embedding.table import open_table
from index.ids import IdMap, vector_fingerprints
from index.manifest import Manifest
from index.store import IndexStore
from index.version_files import VersionContents
from recall_server.client import ClientConfig, RecallClient
from recall_server.config import ServerConfig
from recall_server.server import RecallServer

MODEL = "m1"
DIM = 16


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def publish_index(index_dir: Path, note_ids: list[str], vectors: np.ndarray, model_version: str = MODEL,
                  nlist: int = 1, make_current: bool = True) -> str:
    """Publishes an IVF-Flat inner-product version through the index store; nlist=1 searches exactly."""
    store = IndexStore(index_dir)
    dim = vectors.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    ids = IdMap()
    labels = ids.assign(note_ids, vector_fingerprints(vectors))
    index.add_with_ids(vectors, labels)
    with store.writer_lock():
        version = store.next_version()
        manifest = Manifest(version=version, parent=None, model_version=model_version, dim=dim, metric="ip",
                            factory=f"IVF{nlist},Flat", ntotal=len(note_ids), nlist=nlist, next_id=ids.next_id,
                            default_nprobe=nlist)
        store.publish(manifest, VersionContents(index=index, ids=ids), make_current=make_current)
    return version


@dataclass
class Corpus:
    """Notes with unit vectors, stored in a Parquet embedding table and an exact index version."""

    note_ids: list[str]
    vectors: np.ndarray
    table_url: str
    index_dir: Path
    version: str

    def vector(self, note_id: str) -> np.ndarray:
        return self.vectors[self.note_ids.index(note_id)]


@pytest.fixture
def corpus(tmp_path) -> Corpus:
    rng = np.random.default_rng(7)
    note_ids = [f"n{i:03d}" for i in range(300)]
    vectors = unit_rows(rng, len(note_ids))
    table_url = f"parquet:{tmp_path / 'table'}"
    with open_table(table_url) as table:
        table.put_many(note_ids, vectors, MODEL)
    index_dir = tmp_path / "index"
    version = publish_index(index_dir, note_ids, vectors)
    return Corpus(note_ids, vectors, table_url, index_dir, version)


@dataclass
class RunningServer:
    server: RecallServer
    clients: list[RecallClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, **options) -> RecallClient:
        client = RecallClient(ClientConfig(target=self.target, **options))
        self.clients.append(client)
        return client


@pytest.fixture
def start_server():
    """Starts in-process servers on free ports (``start_server(config, wait=True)``); stops them after."""
    running: list[RunningServer] = []

    def start(config: ServerConfig, wait: bool = True, **parts) -> RunningServer:
        config = replace(config, port=0, grace_seconds=min(config.grace_seconds, 2.0)).validate()
        server = RecallServer(config, **parts).start()
        if wait:
            assert server.holder.wait_loaded(10), "the server did not load its index"
        handle = RunningServer(server)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        for client in handle.clients:
            client.close()
        handle.server.stop(grace=0)


def server_config(corpus: Corpus, **overrides) -> ServerConfig:
    return ServerConfig(index_dir=str(corpus.index_dir), table_url=corpus.table_url,
                        reload_interval_seconds=0.05, **overrides)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key
