"""The Redis embedding table: one float32 vector per key, for low-latency history lookups.

Url: ``redis://[[user]:password@]host:port/db[?prefix=P&ttl=SECONDS&cluster=1]``; ``rediss://``
turns on TLS (``ssl_ca_certs=``, ``ssl_cert_reqs=`` and the other redis-py url options pass
through); ``redis+cluster://`` / ``rediss+cluster://`` or ``cluster=1`` talk to a Redis Cluster.

Keys (``P`` = prefix, default ``emb``; ``V`` = model version with ``%`` and ``:`` escaped):

    P:V:<note_id>   the vector: dim little-endian float32 values (4 * dim bytes), optional TTL
    P#ids:V         sorted set of the version's note ids; score = expiry time (inf: no TTL),
                    so count() counts live ids and scans skip expired ones
    P#versions      hash: model version -> dim

Vector keys carry no hash tag, so in a cluster they spread over every node; a lookup of 50 ids is
one pipelined request to each node that holds some of them, sent together. The id set of one
version is one key (one node) and is walked with ZSCAN, so scans never touch unrelated keys.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import redis
import redis.exceptions as rexc
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from embedding.table import DimensionMismatch, EmbeddingTable, Lookup, TableUnavailable, check_vectors
from i2i.core.errors import InputError

DEFAULT_PREFIX = "emb"
OWN_OPTIONS = ("prefix", "ttl", "cluster")
WRITE_CHUNK = 2000  # keys per pipelined request
READ_CHUNK = 1000
UNAVAILABLE_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterError, rexc.RedisClusterException)


@dataclass(frozen=True)
class RedisTableConfig:
    """What the TABLE url says, split into our options and the url redis-py connects with."""

    connect_url: str
    display_url: str  # the url with the password hidden, for messages
    prefix: str = DEFAULT_PREFIX
    ttl_seconds: int | None = None
    cluster: bool = False

    @classmethod
    def from_url(cls, url: str) -> "RedisTableConfig":
        parts = urlsplit(url)
        scheme = parts.scheme
        cluster = scheme.endswith("+cluster")
        scheme = scheme.removesuffix("+cluster")
        if scheme not in ("redis", "rediss"):
            raise InputError(f"not a redis table url: {url!r}")
        ours = {}
        passed = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (ours.__setitem__(key, value) if key in OWN_OPTIONS else passed.append((key, value)))
        if "socket_connect_timeout" not in dict(passed):
            passed.append(("socket_connect_timeout", "3"))
        if "socket_timeout" not in dict(passed):
            passed.append(("socket_timeout", "10"))
        cluster = cluster or ours.get("cluster", "0").lower() in ("1", "true", "yes")
        ttl = None
        if ours.get("ttl"):
            try:
                ttl = int(ours["ttl"])
            except ValueError:
                raise InputError(f"ttl={ours['ttl']!r} in the table url is not a whole number of seconds") from None
            if ttl <= 0:
                raise InputError(f"ttl={ttl} in the table url must be positive")
        path = parts.path
        if cluster:
            if path.strip("/") not in ("", "0"):
                raise InputError(f"Redis Cluster has only database 0, the table url asks for {path.strip('/')}")
            path = ""
        prefix = ours.get("prefix") or DEFAULT_PREFIX
        connect = urlunsplit((scheme, parts.netloc, path, urlencode(passed), ""))
        hidden = parts.netloc
        if parts.password:
            hidden = hidden.replace(f":{parts.password}@", ":***@", 1)
        display = urlunsplit((parts.scheme, hidden, parts.path, parts.query, ""))
        return cls(connect, display, prefix, ttl, cluster)


def _key_part(text: str) -> str:
    return text.replace("%", "%25").replace(":", "%3A")


class RedisEmbeddingTable(EmbeddingTable):
    """Embeddings in Redis (standalone or cluster)."""

    def __init__(self, url: str) -> None:
        self.config = RedisTableConfig.from_url(url)
        self.url = self.config.display_url
        self._dims: dict[str, int] = {}
        with self._guard():
            if self.config.cluster:
                from redis.cluster import RedisCluster

                self.client = RedisCluster.from_url(self.config.connect_url)
            else:
                retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
                self.client = redis.Redis.from_url(self.config.connect_url, retry=retry)

    # ----------------------------------------------------------------- keys
    def vector_key(self, note_id: str, model_version: str) -> str:
        return f"{self.config.prefix}:{_key_part(model_version)}:{note_id}"

    def ids_key(self, model_version: str) -> str:
        return f"{self.config.prefix}#ids:{_key_part(model_version)}"

    @property
    def versions_key(self) -> str:
        return f"{self.config.prefix}#versions"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turns redis-py errors into the table's error types."""
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise TableUnavailable(f"embedding table {self.url} is unavailable: {exc}") from exc
        except rexc.RedisError as exc:
            raise InputError(f"embedding table {self.url}: {exc}") from exc

    def _pipeline(self):
        return self.client.pipeline(transaction=False)

    # ----------------------------------------------------------------- reads
    def model_versions(self) -> list[str]:
        with self._guard():
            return sorted(v.decode() for v in self.client.hkeys(self.versions_key))

    def _decode(self, ids: list[str], values: list, dim: int) -> tuple[list[str], np.ndarray, list[str]]:
        found, blobs, missing = [], [], []
        for note_id, value in zip(ids, values):
            if value is None:
                missing.append(note_id)
                continue
            if len(value) != 4 * dim:
                raise InputError(f"embedding table {self.url}: value of {note_id!r} has {len(value)} bytes, "
                                 f"expected {4 * dim} ({dim} float32)")
            found.append(note_id)
            blobs.append(value)
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(found), dim).astype(np.float32)
        return found, matrix, missing

    def get_many(self, note_ids: Sequence[str], model_version: str) -> Lookup:
        note_ids = list(note_ids)
        with self._guard():
            pipe = self._pipeline()
            pipe.hget(self.versions_key, model_version)
            keys = [self.vector_key(note_id, model_version) for note_id in note_ids]
            if self.config.cluster:
                for key in keys:
                    pipe.get(key)
            elif keys:
                pipe.mget(keys)
            replies = pipe.execute()  # one round trip (per cluster node, sent together)
        dim_reply, values = replies[0], (replies[1:] if self.config.cluster else (replies[1] if keys else []))
        if dim_reply is None:
            self.refuse_other_versions(model_version)
            return Lookup([], np.zeros((0, 0), np.float32), note_ids)
        found, matrix, missing = self._decode(note_ids, values, int(dim_reply))
        return Lookup(found, matrix, missing)

    def _live_members(self, model_version: str) -> Iterator[list[str]]:
        """Batches of live ids (ZSCAN, deduplicated: a rehash may repeat members)."""
        seen: set[str] = set()
        now = time.time()
        batch: list[str] = []
        with self._guard():
            for member, expiry in self.client.zscan_iter(self.ids_key(model_version), count=READ_CHUNK):
                note_id = member.decode()
                if expiry <= now or note_id in seen:
                    continue
                seen.add(note_id)
                batch.append(note_id)
                if len(batch) >= READ_CHUNK:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _fetch(self, note_ids: list[str], model_version: str) -> list:
        keys = [self.vector_key(note_id, model_version) for note_id in note_ids]
        with self._guard():
            if self.config.cluster:
                return self.client.mget_nonatomic(keys)
            return self.client.mget(keys)

    def scan(self, model_version: str, batch_size: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        with self._guard():
            dim_reply = self.client.hget(self.versions_key, model_version)
        if dim_reply is None:
            return
        dim = int(dim_reply)
        pending_ids: list[str] = []
        pending: list[np.ndarray] = []
        for ids in self._live_members(model_version):
            found, matrix, _ = self._decode(ids, self._fetch(ids, model_version), dim)  # expired: skipped
            pending_ids += found
            pending.append(matrix)
            while len(pending_ids) >= batch_size:
                stacked = np.concatenate(pending)
                yield pending_ids[:batch_size], stacked[:batch_size]
                pending_ids, pending = pending_ids[batch_size:], [stacked[batch_size:]]
        if pending_ids:
            yield pending_ids, np.concatenate(pending)

    def count(self, model_version: str) -> int:
        with self._guard():
            return int(self.client.zcount(self.ids_key(model_version), f"({time.time()}", "+inf"))

    def has_ids(self, model_version: str) -> set[str]:
        return {note_id for batch in self._live_members(model_version) for note_id in batch}

    # ----------------------------------------------------------------- writes
    def _dim_of(self, model_version: str) -> int | None:
        if model_version not in self._dims:
            with self._guard():
                reply = self.client.hget(self.versions_key, model_version)
            if reply is None:
                return None
            self._dims[model_version] = int(reply)
        return self._dims[model_version]

    def put_many(self, note_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> None:
        note_ids = list(note_ids)
        matrix = check_vectors(note_ids, vectors).astype("<f4", copy=False)
        if not isinstance(model_version, str) or not model_version.strip():
            raise InputError(f"model version {model_version!r} is not a non-empty string")
        if not note_ids:
            return
        dim = matrix.shape[1]
        existing = self._dim_of(model_version)
        if existing is not None and existing != dim:
            raise DimensionMismatch(f"embedding table {self.url} holds {existing}-dimensional vectors for "
                                    f"model version {model_version!r}, got {dim}")
        ttl = self.config.ttl_seconds
        ids_key = self.ids_key(model_version)
        with self._guard():
            for start in range(0, len(note_ids), WRITE_CHUNK):
                now = time.time()
                expiry = now + ttl if ttl else math.inf
                pipe = self._pipeline()
                pipe.hsetnx(self.versions_key, model_version, dim)
                chunk = note_ids[start:start + WRITE_CHUNK]
                for note_id, row in zip(chunk, matrix[start:start + WRITE_CHUNK]):
                    pipe.set(self.vector_key(note_id, model_version), row.tobytes(), ex=ttl)
                pipe.zadd(ids_key, {note_id: expiry for note_id in chunk})
                if ttl:
                    pipe.zremrangebyscore(ids_key, "-inf", f"({now}")
                pipe.execute()
        self._dims[model_version] = dim

    def delete_many(self, note_ids: Sequence[str], model_version: str) -> int:
        note_ids = list(dict.fromkeys(note_ids))
        if not note_ids:
            return 0
        ids_key = self.ids_key(model_version)
        removed = 0
        with self._guard():
            for start in range(0, len(note_ids), WRITE_CHUNK):
                chunk = note_ids[start:start + WRITE_CHUNK]
                pipe = self._pipeline()
                for note_id in chunk:
                    pipe.delete(self.vector_key(note_id, model_version))
                pipe.zrem(ids_key, *chunk)
                removed += sum(pipe.execute()[:-1])
            if self.client.zcard(ids_key) == 0:
                self.client.hdel(self.versions_key, model_version)
                self._dims.pop(model_version, None)
        return removed

    def flush_version(self, model_version: str) -> int:
        """Deletes every embedding of a model version (retiring an old model)."""
        return self.delete_many(list(self.has_ids(model_version)), model_version)

    def close(self) -> None:
        self.client.close()
