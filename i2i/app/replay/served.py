"""An embedding channel's recalls through a real ``i2i serve`` process, kept beside its index.

The recalled lists are stored once made (``recalls.parquet`` and ``recalls.json``, each written
atomically), keyed by the index version served and the users' histories, so a resumed replay does
not start the server again for a channel it already recalled."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from i2i.app.replay.channels import ServerChannel
from i2i.app.replay.embedded import ChannelIndex
from i2i.app.replay.results import ChannelResult
from i2i.app.replay.scoring import UserCase
from i2i.core.io import atomic_file, atomic_write_text


def cases_digest(cases: Sequence[UserCase], k: int) -> str:
    """What the requests were: every user's history, in order, and k."""
    digest = hashlib.sha256(f"k={k}\n".encode())
    for case in cases:
        digest.update(f"{case.user_id}\t{','.join(case.history)}\n".encode())
    return digest.hexdigest()[:24]


def stored_recalls(root: Path, key: dict) -> ChannelResult | None:
    """The stored recalls of a channel when they were made for ``key``, else None."""
    meta_path, table_path = root / "recalls.json", root / "recalls.parquet"
    if not (meta_path.exists() and table_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    table = pq.read_table(table_path)
    recalls: dict[str, list[str]] = {user: [] for user in meta["users"]}
    for user, note in zip(table.column("user_id").to_pylist(), table.column("note_id").to_pylist()):
        recalls[user].append(note)
    return ChannelResult(meta["name"], meta["kind"], recalls, meta["seconds"], meta["notes"])


def store_recalls(root: Path, key: dict, result: ChannelResult) -> None:
    users, notes = [], []
    for user, recalled in result.recalls.items():
        users += [user] * len(recalled)
        notes += recalled
    with atomic_file(root / "recalls.parquet") as tmp:
        pq.write_table(pa.table({"user_id": pa.array(users, pa.string()), "note_id": pa.array(notes, pa.string())}),
                       tmp)
    meta = {"key": key, "name": result.name, "kind": result.kind, "seconds": result.seconds, "notes": result.notes,
            "users": list(result.recalls)}
    atomic_write_text(root / "recalls.json", json.dumps(meta, indent=1) + "\n")


def serve_channel(name: str, index: ChannelIndex, cases: Sequence[UserCase], k: int, workers: int,
                  log=print) -> ChannelResult:
    """Starts ``i2i serve`` on the channel's day D index, recalls for every user over gRPC, stops it."""
    from i2i.testing.serving import ServerProcess

    key = {"index_version": index.day_version(), "cases": cases_digest(cases, k)}
    stored = stored_recalls(index.root, key)
    if stored is not None:
        log(f"{name}: recalls of index {key['index_version']} already made, reused")
        return stored
    started = time.perf_counter()
    with ServerProcess(index.index_dir, index.table_url) as server:
        channel = ServerChannel(name, server, workers=workers)
        log(f"{name}: serving {index.current()} on {server.address}; {len(cases)} users, {workers} in flight")
        recalls = channel.recall(cases, k)
    notes = {"failed_requests": channel.failed, "missing_history": channel.missing_history,
             "served": sorted({f"{v} / {m[:12]}" for v, m in channel.versions})}
    result = ChannelResult(name, channel.kind, recalls, time.perf_counter() - started, notes)
    if not channel.failed:  # a list cut short by a failed request is not kept for reuse
        store_recalls(index.root, key, result)
    return result
