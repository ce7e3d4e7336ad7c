"""Both Beam jobs on a real Dask cluster (2 worker processes) give the local runner's outputs."""
from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest
from dask.distributed import Client, LocalCluster

from i2i.app.cli import main as i2i_main
from i2i.core.io import read_table
from pipelines.cooccur import run as cooccur
from pipelines.pairs import run as pairs
from tests.pipelines.cooccur_reference import T0, reference_scores, scores_dict, write_jsonl
from tests.pipelines.test_cooccur import random_log, write_partitioned
from tests.pipelines.test_pairs import OLD, notes_table

LOCAL = ["--runner=DirectRunner"]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        with Client(local) as client:
            client.get_task_stream(start=time.time())  # installs the scheduler's task-stream recorder
            yield local.scheduler_address, client


def dask_args(cluster) -> list[str]:
    return ["--runner=dask", "--dask-address", cluster[0].removeprefix("tcp://")]


def rows(table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


def workers_that_ran(client: Client, since: float) -> set[str]:
    """Workers that ran a Beam bundle (a task of the runner's ``_run_bundle``) since ``since``."""
    return {task["worker"] for task in client.get_task_stream(start=since) if "run_bundle" in str(task["key"])}


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """A small log over 4 days (4 Parquet partitions) plus a JSON Lines file with 3 bad records."""
    root = tmp_path_factory.mktemp("dask") / "events"
    log = random_log(seed=16, events=1200, users=40, notes=30, days=4)
    write_partitioned(root, log)
    write_jsonl(root / "dt=2024-01-05" / "part-0.jsonl", [
        {"user_id": "u", "note_id": "a", "action": "share", "ts": T0},
        {"user_id": "u", "note_id": "a", "ts": T0},
        "{not json",
        {"user_id": "u", "note_id": "a", "action": "view", "ts": T0},
    ])
    return root, log


def test_both_jobs_on_dask_match_the_local_runner_and_use_both_workers(tmp_path, cluster, events):
    root, log = events
    job = ["--events", str(root), "--window-seconds", "7200", "--shards", "6"]
    local = cooccur([*job, "--out", str(tmp_path / "local"), *LOCAL])
    started = time.time()
    remote = cooccur([*job, "--out", str(tmp_path / "dask"), *dask_args(cluster)])
    assert len(workers_that_ran(cluster[1], started)) == 2
    assert remote["counts"] == local["counts"]
    assert local["counts"]["input"] == 1204 and local["counts"]["dead_lettered"] == 3
    for name in ("scores", "related", "dead_letter"):
        assert rows(read_table(tmp_path / "dask" / name)) == rows(read_table(tmp_path / "local" / name)), name
    assert scores_dict(read_table(tmp_path / "dask" / "scores")) == reference_scores(log, 7200)

    notes = tmp_path / "notes"
    notes.mkdir()
    ids = sorted({r[1] for r in log})
    pq.write_table(notes_table({n: OLD for n in ids[: len(ids) // 2]}), notes / "part-0.parquet")
    pq.write_table(notes_table({n: OLD for n in ids[len(ids) // 2: -3]}), notes / "part-1.parquet")  # 3 missing
    job = ["--notes", str(notes), "--val-fraction", "0.3", "--shards", "4"]
    local_pairs = pairs([*job, "--related", str(tmp_path / "local"), "--out", str(tmp_path / "pairs-local"), *LOCAL])
    started = time.time()
    remote_pairs = pairs([*job, "--related", str(tmp_path / "dask"), "--out", str(tmp_path / "pairs-dask"),
                          *dask_args(cluster)])
    assert len(workers_that_ran(cluster[1], started)) == 2
    assert remote_pairs["counts"] == local_pairs["counts"]
    assert local_pairs["counts"]["missing_note_dropped"] > 0 and local_pairs["counts"]["val"] > 0
    assert rows(read_table(tmp_path / "pairs-dask")) == rows(read_table(tmp_path / "pairs-local"))


def test_failed_run_on_dask_leaves_previous_output(tmp_path, cluster, events):
    root, _ = events
    out = tmp_path / "out"
    first = cooccur(["--events", str(root), "--out", str(out), *dask_args(cluster)])
    assert first["counts"]["dead_lettered"] == 3
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad"
    bad.mkdir()
    for part in root.rglob("*.parquet"):
        (bad / f"{part.parent.name}.parquet").write_bytes(part.read_bytes())
    (bad / "zz-broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(Exception):
        cooccur(["--events", str(bad), "--out", str(out), *dask_args(cluster)])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_dask_workers_starts_its_own_cluster(tmp_path, events, capsys):
    root, _ = events
    out = tmp_path / "out"
    assert i2i_main(["cooccur", "--events", str(root), "--out", str(out), "--runner=dask", "--dask-workers", "2"]) == 0
    assert "1204 records (1201 valid, 3 dead-lettered)" in capsys.readouterr().out
    assert json.loads((out / "_SUMMARY.json").read_text())["counts"]["dead_lettered"] == 3


@pytest.mark.parametrize("extra, message", [
    (["--dask-workers", "2"], "--dask-address and --dask-workers need --runner=dask"),
    (["--runner=dask", "--dask-address", "nohost"], "must be HOST:PORT of a Dask scheduler"),
    (["--runner=dask", "--dask-address", "h:1", "--dask-workers", "2"], "cannot be combined with --dask-address"),
])
def test_dask_options_are_checked(tmp_path, events, capsys, extra, message):
    root, _ = events
    assert i2i_main(["cooccur", "--events", str(root), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
