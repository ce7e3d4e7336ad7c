"""Request options over a real gRPC channel: nprobe, exclude and published_after, their limits and errors."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from i2i.app.cli import main as i2i_main
from index.builder import BuildConfig
from index.jobs import build_job
from index.store import IndexStore
from recall_server.stubs import recall_pb2

from .conftest import publish_index, server_config
from .test_service import brute_force, call_error

BASE = datetime(2024, 5, 1, tzinfo=timezone.utc)


def published_time(i: int) -> datetime:
    return BASE + timedelta(hours=i)


@pytest.fixture
def dated(corpus, tmp_path):
    """The corpus indexed with publication times (note i at BASE + i hours; every 10th note undated)."""
    notes = tmp_path / "notes"
    notes.mkdir()
    rows = [(note_id, None if i % 10 == 9 else published_time(i)) for i, note_id in enumerate(corpus.note_ids)]
    pq.write_table(pa.table({"note_id": [n for n, _ in rows],
                             "published_at": pa.array([t for _, t in rows], pa.timestamp("ms", tz="UTC"))}),
                   notes / "part-0.parquet")
    index_dir = tmp_path / "dated-index"
    build_job(str(index_dir), corpus.table_url, BuildConfig(factory="Flat", nlist=1, default_nprobe=1),
              notes_path=str(notes))
    return replace(corpus, index_dir=index_dir, version=IndexStore(index_dir).current_version())


# ---------------------------------------------------------------- nprobe
def test_nprobe_sets_the_search_effort(corpus, start_server, tmp_path):
    index_dir = tmp_path / "ivf16"
    publish_index(index_dir, corpus.note_ids, corpus.vectors, nlist=16)
    config = replace(server_config(corpus), index_dir=str(index_dir), max_nprobe=16)
    running = start_server(config)
    client = running.client()
    history = ["n031"]
    full = client.recall(history, k=40, nprobe=16)  # every list: exact
    assert [n.note_id for n in full.notes] == [n for n, _, _ in brute_force(corpus, history, 40)]
    # nprobe=1 scans only the query's nearest list: every result lies in that list.
    index = running.server.holder.current.index.index
    query = corpus.vector("n031")[None, :].astype(np.float32)
    _, nearest = index.quantizer.search(query, 1)
    _, assigned = index.quantizer.search(corpus.vectors.astype(np.float32), 1)
    in_list = {corpus.note_ids[i] for i in np.flatnonzero(assigned[:, 0] == nearest[0, 0])}
    one = client.recall(history, k=40, nprobe=1)
    assert {n.note_id for n in one.notes} <= in_list
    assert len(one.notes) == min(40, len(in_list) - 1)
    assert len(in_list) - 1 < 40 or [n.note_id for n in one.notes] != [n.note_id for n in full.notes]


@pytest.mark.parametrize(("nprobe", "message"), [
    (-1, "nprobe must be 0 (server default) or positive, got -1"),
    (17, "nprobe=17 is above the server's limit max_nprobe=16"),
])
def test_nprobe_outside_the_limits_is_invalid(corpus, start_server, nprobe, message):
    client = start_server(server_config(corpus, max_nprobe=16)).client()
    error = call_error(lambda: client.recall(["n001"], k=5, nprobe=nprobe))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


# ---------------------------------------------------------------- exclude
def test_exclude_leaves_notes_out_without_losing_results(corpus, start_server):
    client = start_server(server_config(corpus)).client()
    history = ["n070", "n071"]
    top = [n for n, _, _ in brute_force(corpus, history, 30)]
    exclude = top[:10] + ["not-in-the-index"]
    response = client.recall(history, k=20, exclude=exclude)
    expected = [n for n in top if n not in exclude][:20]
    assert [n.note_id for n in response.notes] == expected  # the next best fill in: exact top 20
    everything = client.recall(history, k=len(corpus.note_ids), exclude=exclude)
    assert len(everything.notes) == len(corpus.note_ids) - len(history) - 10
    assert not {n.note_id for n in everything.notes} & (set(exclude) | set(history))
    kept = client.recall(history, k=5, exclude=exclude, exclude_history=False)
    assert {"n070", "n071"} <= {n.note_id for n in kept.notes}  # exclude does not imply history exclusion


@pytest.mark.parametrize(("exclude", "message"), [
    ([f"n{i:03d}" for i in range(6)], "exclude lists 6 note ids, above the server's limit max_exclude=5"),
    (["n001", ""], "exclude[1] is an empty note id"),
])
def test_exclude_beyond_the_limit_or_empty_is_invalid(corpus, start_server, exclude, message):
    client = start_server(server_config(corpus, max_exclude=5)).client()
    assert client.recall(["n100"], k=3, exclude=exclude[:5] if len(exclude) > 5 else ["n001"]).notes
    error = call_error(lambda: client.recall(["n100"], k=3, exclude=exclude))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


# ---------------------------------------------------------------- published_after
def test_published_after_keeps_only_fresh_notes(dated, start_server):
    client = start_server(server_config(dated)).client()
    history = ["n010", "n150"]
    cutoff = 200  # notes 200.. (minus the undated ones) are fresh
    response = client.recall(history, k=30, published_after=published_time(cutoff))
    fresh = {n for i, n in enumerate(dated.note_ids) if i >= cutoff and i % 10 != 9}
    expected = [n for n, _, _ in brute_force(dated, history, len(dated.note_ids)) if n in fresh][:30]
    assert [n.note_id for n in response.notes] == expected  # exact top 30 among fresh notes
    assert all(int(n.note_id[1:]) >= cutoff for n in response.notes)
    # "at or after": a note published exactly at the cutoff counts; a millisecond later it does not.
    exactly = client.recall(["n200"], k=len(dated.note_ids), exclude_history=False,
                            published_after=published_time(cutoff))
    assert "n200" in {n.note_id for n in exactly.notes}
    later = client.recall(["n200"], k=len(dated.note_ids), exclude_history=False,
                          published_after=published_time(cutoff) + timedelta(milliseconds=1))
    assert "n200" not in {n.note_id for n in later.notes}
    assert len(later.notes) == len(fresh) - 1
    # A selective filter still fills k: the filter runs inside the search, not on a fixed candidate list.
    few = client.recall(history, k=10, published_after=published_time(290))
    assert sorted(n.note_id for n in few.notes) == ["n290", "n291", "n292", "n293", "n294", "n295", "n296",
                                                    "n297", "n298"]


def test_published_after_needs_publication_times(corpus, start_server):
    client = start_server(server_config(corpus)).client()  # published without --notes
    error = call_error(lambda: client.recall(["n001"], k=5, published_after=BASE))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "holds no publication times (build or update it with --notes)" in error.details()


def test_published_after_before_the_epoch_is_invalid(dated, start_server):
    running = start_server(server_config(dated))
    request = recall_pb2.RecallRequest(history=["n001"], k=3)
    request.published_after.seconds = -5
    error = call_error(lambda: running.client().stub.Recall(request, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "published_after must be a time at or after 1970-01-01" in error.details()


def test_publication_times_survive_update_and_rebuild(dated, tmp_path):
    from index.jobs import rebuild_job, update_job

    update_job(str(dated.index_dir), dated.table_url)
    rebuild_job(str(dated.index_dir), dated.table_url, nlist=1)
    store = IndexStore(dated.index_dir)
    ids = store.load(hold=False).contents.ids
    times = ids.publish_times()
    assert len(times) == 270
    assert times["n005"] == int(published_time(5).timestamp() * 1000) and "n009" not in times


# ---------------------------------------------------------------- the command line
def test_recall_command_passes_the_options(dated, start_server, capsys):
    running = start_server(server_config(dated, max_nprobe=4))
    code = i2i_main(["recall", "--server", running.target, "--history", "n010", "--k", "300",
                     "--nprobe", "1", "--exclude", "n290,n291", "--exclude", "n292",
                     "--published-after", "2024-05-13T08:00:00Z"])  # BASE + 296 h
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split()[1] for line in out.splitlines()[1:] if line.split()[0].isdigit()]
    assert rows and set(rows) == {"n296", "n297", "n298"}
    assert i2i_main(["recall", "--server", running.target, "--history", "n010", "--nprobe", "5"]) == 2
    assert "max_nprobe=4" in capsys.readouterr().err
    assert i2i_main(["recall", "--server", running.target, "--history", "n010", "--published-after", "May 1"]) == 2
    assert "is not an ISO 8601 time" in capsys.readouterr().err
