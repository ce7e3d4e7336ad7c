"""The Parquet embedding table: appends, last write wins, deletes, compaction, crash leftovers."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow.dataset as ds
import pytest

from embedding.table import DimensionMismatch, ModelVersionMismatch, open_table
from embedding.table.parquet import JOURNAL_NAME, ParquetEmbeddingTable
from i2i.core.errors import InputError
from i2i.core.schemas import embeddings_schema, validate

DIM = 8


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def plain_rows(directory) -> list[tuple[str, str]]:
    """What any pyarrow dataset reader of the directory sees."""
    table = ds.dataset(str(directory), format="parquet").to_table()
    assert validate(table, "embeddings", embeddings_schema(DIM)).ok
    return sorted(zip(table.column("note_id").to_pylist(), table.column("model_version").to_pylist()))


@pytest.fixture
def table(tmp_path) -> ParquetEmbeddingTable:
    return open_table(f"parquet:{tmp_path / 'emb'}")


def test_open_table_picks_the_parquet_backend(tmp_path):
    assert isinstance(open_table(f"parquet:{tmp_path}/t"), ParquetEmbeddingTable)
    with pytest.raises(InputError, match="unknown embedding table url"):
        open_table(f"{tmp_path}/t")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        open_table(f"parquet:{tmp_path}/file")


def test_empty_table_reports_everything_missing(table):
    lookup = table.get_many(["a", "b"], "m1")
    assert lookup.found_ids == [] and lookup.missing_ids == ["a", "b"]
    assert table.count("m1") == 0 and table.model_versions() == [] and list(table.scan("m1")) == []


def test_round_trip_follows_request_order(table):
    data = vectors(5)
    table.put_many(["a", "b", "c", "d", "e"], data, "m1")
    lookup = table.get_many(["e", "x", "a", "c"], "m1")
    assert lookup.found_ids == ["e", "a", "c"] and lookup.missing_ids == ["x"]
    np.testing.assert_array_equal(lookup.vectors, data[[4, 0, 2]])
    assert lookup.vectors.dtype == np.float32
    assert table.count("m1") == 5 and table.model_versions() == ["m1"]
    assert plain_rows(table.directory) == [(i, "m1") for i in "abcde"]


def test_last_write_wins_across_appends_and_within_a_batch(table):
    first, second = vectors(3, seed=1), vectors(3, seed=2)
    table.put_many(["a", "b", "c"], first, "m1")
    table.put_many(["b", "x", "b"], second, "m1")
    lookup = table.get_many(["a", "b", "x"], "m1")
    np.testing.assert_array_equal(lookup.vectors, np.stack([first[0], second[2], second[1]]))
    assert table.count("m1") == 4
    ids = [i for batch, _ in table.scan("m1", batch_size=3) for i in batch]
    assert sorted(ids) == ["a", "b", "c", "x"]


def test_another_instance_sees_new_writes(table):
    reader = ParquetEmbeddingTable(table.directory)
    table.put_many(["a"], vectors(1), "m1")
    assert reader.count("m1") == 1
    table.put_many(["a"], vectors(1, seed=5), "m1")
    np.testing.assert_array_equal(reader.get_many(["a"], "m1").vectors, vectors(1, seed=5))


def test_model_versions_are_kept_apart_and_guarded(table):
    table.put_many(["a", "b"], vectors(2), "m1")
    table.put_many(["a"], vectors(1, seed=3), "m2")
    assert table.model_versions() == ["m1", "m2"]
    assert table.count("m1") == 2 and table.count("m2") == 1
    np.testing.assert_array_equal(table.get_many(["a"], "m2").vectors, vectors(1, seed=3))
    with pytest.raises(ModelVersionMismatch, match="no embeddings for model version 'm3'"):
        table.get_many(["a"], "m3")
    with pytest.raises(ModelVersionMismatch, match="no embeddings for model version .m3."):
        table.require_model_version("m3")


def test_delete_never_comes_back(table):
    table.put_many(["a", "b", "c"], vectors(3), "m1")
    table.put_many(["b"], vectors(1, seed=4), "m1")
    table.put_many(["b"], vectors(1, seed=4), "m2")
    assert table.delete_many(["b", "zz"], "m1") == 1
    assert table.get_many(["b"], "m1").missing_ids == ["b"]
    assert table.get_many(["b"], "m2").found_ids == ["b"]
    assert ("b", "m1") not in plain_rows(table.directory)
    table.compact()
    assert table.get_many(["b"], "m1").missing_ids == ["b"] and table.count("m1") == 2
    assert table.delete_many(["b"], "m1") == 0


def test_deleting_every_row_of_a_version_removes_it(table):
    table.put_many(["a"], vectors(1), "m1")
    table.put_many(["a"], vectors(1), "m2")
    assert table.delete_many(["a"], "m1") == 1
    assert table.model_versions() == ["m2"]


def test_compaction_keeps_one_row_per_key(table):
    for seed in range(4):
        table.put_many(["a", "b"], vectors(2, seed=seed), "m1")
    table.put_many(["c"], vectors(1), "m2")
    report = table.compact()
    assert (report.rows_before, report.rows_after, report.parts_before, report.parts_after) == (9, 3, 5, 1)
    assert plain_rows(table.directory) == [("a", "m1"), ("b", "m1"), ("c", "m2")]
    np.testing.assert_array_equal(table.get_many(["a", "b"], "m1").vectors, vectors(2, seed=3))
    table.put_many(["a"], vectors(1, seed=9), "m1")  # writes after compaction still win
    np.testing.assert_array_equal(table.get_many(["a"], "m1").vectors, vectors(1, seed=9))


def test_crash_leftovers_are_invisible_and_a_delete_journal_is_finished(table):
    table.put_many(["a", "b"], vectors(2), "m1")
    # A writer killed mid-write leaves a hidden temp part; a killed delete leaves its journal.
    (table.directory / ".part-0000000009-deadbeef.parquet.tmp").write_bytes(b"PAR1 half written")
    (table.directory / JOURNAL_NAME).write_text(json.dumps({"model_version": "m1", "note_ids": ["a"]}))
    reader = ParquetEmbeddingTable(table.directory)
    assert reader.get_many(["a", "b"], "m1").found_ids == ["b"]
    assert reader.has_ids("m1") == {"b"}
    table.put_many(["c"], vectors(1), "m1")  # the next writer finishes the delete first
    assert not (table.directory / JOURNAL_NAME).exists()
    assert plain_rows(table.directory) == [("b", "m1"), ("c", "m1")]


def test_bad_input_is_refused(table):
    with pytest.raises(InputError, match="2 note ids but 3"):
        table.put_many(["a", "b"], vectors(3), "m1")
    with pytest.raises(InputError, match="NaN"):
        table.put_many(["a"], np.full((1, DIM), np.nan, np.float32), "m1")
    with pytest.raises(InputError, match="non-empty"):
        table.put_many([""], vectors(1), "m1")
    with pytest.raises(InputError, match="model version"):
        table.put_many(["a"], vectors(1), "")
    table.put_many(["a"], vectors(1), "m1")
    with pytest.raises(DimensionMismatch, match="holds 8-dimensional"):
        table.put_many(["b"], np.zeros((1, 4), np.float32), "m2")
    assert os.listdir(table.directory).count("_lock") == 1
    assert table.count("m1") == 1


def foreign_file(directory, name: str, ids: list[str], matrix: np.ndarray, model_version: str = "m1",
                 variable_list: bool = False) -> None:
    """A contract-conforming file as another tool (Spark, a pandas job) names and types it."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    values = pa.array(matrix.ravel(), pa.float32())
    embedding = (pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, DIM, dtype=np.int32)), values)
                 if variable_list else pa.FixedSizeListArray.from_arrays(values, DIM))
    stamp = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    pq.write_table(pa.table({"note_id": ids, "embedding": embedding, "model_version": [model_version] * len(ids),
                             "embedded_at": pa.array([stamp] * len(ids), pa.timestamp("us", tz="UTC"))}),
                   directory / name, compression="snappy")


SPARK_0 = "part-00000-4f1c2a9e-8d0b-4c55-9a61-0e3d2b7c1f00-c000.snappy.parquet"
SPARK_1 = "part-00001-4f1c2a9e-8d0b-4c55-9a61-0e3d2b7c1f00-c000.snappy.parquet"


def test_files_of_another_writer_are_the_oldest_writes_in_name_order(tmp_path):
    directory = tmp_path / "spark"
    first, second, own = vectors(3, seed=1), vectors(2, seed=2), vectors(1, seed=3)
    foreign_file(directory, SPARK_1, ["b", "c"], second, variable_list=True)  # list<float32>, written first
    foreign_file(directory, SPARK_0, ["a", "b", "c"], first)
    (directory / "_SUCCESS").write_text("")
    # A reader of the directory as one dataset (what CONTRACTS.md calls a table) sees every row.
    assert ds.dataset(str(directory), format="parquet").count_rows() == 5

    table = open_table(f"parquet:{directory}")
    assert table.model_versions() == ["m1"] and table.count("m1") == 3 and table.dim() == DIM
    found = table.get_many(["a", "b", "c"], "m1")
    np.testing.assert_array_equal(found.vectors, np.stack([first[0], second[0], second[1]]))  # part-00001 is later

    table.put_many(["c"], own, "m1")  # the table's own write is later than every foreign file
    np.testing.assert_array_equal(table.get_many(["c"], "m1").vectors, own)
    assert table.delete_many(["b"], "m1") == 1
    assert table.get_many(["b"], "m1").missing_ids == ["b"]
    assert sorted(open_table(f"parquet:{directory}").has_ids("m1")) == ["a", "c"]
    assert ("b", "m1") not in plain_rows(directory)  # the delete rewrote the foreign files too


def test_an_index_builds_from_a_table_written_by_another_tool(tmp_path):
    from index.source import read_table

    directory = tmp_path / "spark"
    foreign_file(directory, SPARK_0, ["a", "b", "c"], vectors(3), variable_list=True)
    embeddings = read_table(f"parquet:{directory}", None)
    assert embeddings.note_ids == ["a", "b", "c"] and embeddings.model_version == "m1"
    np.testing.assert_array_equal(embeddings.vectors, vectors(3))


def test_unreadable_foreign_content_is_refused_by_name(tmp_path):
    directory = tmp_path / "odd"
    foreign_file(directory, SPARK_0, ["a"], vectors(1))
    (directory / "notes.txt").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read part notes.txt"):
        open_table(f"parquet:{directory}").count("m1")
    (directory / "notes.txt").unlink()
    (directory / "model_version=m1").mkdir()
    with pytest.raises(InputError, match="subdirectory 'model_version=m1'"):
        open_table(f"parquet:{directory}").count("m1")
    (directory / "model_version=m1").rmdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    ragged = pa.table({"note_id": ["x", "y"], "embedding": pa.array([[1.0] * DIM, [1.0]], pa.list_(pa.float32())),
                       "model_version": ["m1", "m1"],
                       "embedded_at": pa.array([0, 0], pa.timestamp("ms", tz="UTC"))})
    pq.write_table(ragged, directory / SPARK_1)
    with pytest.raises(InputError, match=re.escape(SPARK_1) + ": column embedding of type list"):
        open_table(f"parquet:{directory}").count("m1")


def test_last_write_wins_after_a_delete_rewrites_a_part(tmp_path):
    """A delete rewrites the older part in place: it must stay older than the later write, and keep
    its own row order (a later row within a part wins)."""
    directory = tmp_path / "emb"
    table = open_table(f"parquet:{directory}")
    v = vectors(6, seed=9)
    table.put_many(["a", "b", "c", "a"], v[:4], "m1")  # part 1: a twice (the second row wins), b, c
    table.put_many(["c"], v[4:5], "m1")  # part 2: c again
    assert table.delete_many(["b"], "m1") == 1  # rewrites part 1 only
    for reader in (table, open_table(f"parquet:{directory}")):  # cached and fresh readers
        found = reader.get_many(["a", "b", "c"], "m1")
        assert found.found_ids == ["a", "c"] and found.missing_ids == ["b"]
        np.testing.assert_array_equal(found.vectors, np.stack([v[3], v[4]]))
    table.put_many(["a"], v[5:6], "m1")  # a later write still wins over the rewritten part
    assert table.delete_many(["c"], "m1") == 1
    np.testing.assert_array_equal(open_table(f"parquet:{directory}").get_many(["a"], "m1").vectors, v[5:6])
    table.compact()
    np.testing.assert_array_equal(open_table(f"parquet:{directory}").get_many(["a"], "m1").vectors, v[5:6])


# ------------------------------------------------ a long-lived reader's cached rows follow every change
def _put_new_part(table, v):
    table.put_many(["d", "a"], v[4:6], "m1")


def _rewrite_by_delete(table, v):
    assert table.delete_many(["b"], "m1") == 1  # the older part is replaced under the same name


def _write_and_compact(table, v):
    table.put_many(["d"], v[4:5], "m1")
    table.compact()  # a new part with every live row, the old ones removed


def _crashed_delete(table, v):
    from i2i.core.io import atomic_write_text

    atomic_write_text(table.directory / JOURNAL_NAME, json.dumps({"model_version": "m1", "note_ids": ["c"]}))


def _expected(change) -> dict[str, int]:
    """Which row of ``v`` each note's vector is after the history below and ``change``."""
    rows = {"a": 3, "b": 1, "c": 2}
    if change is _put_new_part:
        rows.update(d=4, a=5)
    if change is _write_and_compact:
        rows.update(d=4)
    if change is _rewrite_by_delete:
        del rows["b"]
    if change is _crashed_delete:
        del rows["c"]
    return rows


def _same_tick(directory, mtime_ns: int) -> None:
    """Puts the directory's mtime back: what a filesystem shows when the write fell into the same
    clock tick as the reader's listing (ext4's tick is a few ms, ext3's a second)."""
    os.utime(directory, ns=(os.stat(directory).st_atime_ns, mtime_ns))


def _next_tick(directory, mtime_ns: int) -> None:
    """Makes sure the directory's mtime moved on from ``mtime_ns`` (a fast write may share the tick of
    the listing before it) by adding and removing a hidden file until the filesystem's clock ticked."""
    while os.stat(directory).st_mtime_ns == mtime_ns:
        (directory / ".tick").write_text("")
        (directory / ".tick").unlink()


@pytest.mark.parametrize("change", [_put_new_part, _rewrite_by_delete, _write_and_compact, _crashed_delete],
                         ids=["new part", "rewrite by delete", "compaction", "crashed delete's journal"])
@pytest.mark.parametrize("tick", ["later tick", "same tick"])
def test_a_cached_reader_sees_every_change(tmp_path, change, tick):
    directory = tmp_path / "emb"
    table = open_table(f"parquet:{directory}")
    v = vectors(6, seed=11)
    table.put_many(["a", "b", "c"], v[:3], "m1")
    table.put_many(["a"], v[3:4], "m1")
    # A later tick: the stamp is trusted at once (as on a filesystem with a fine clock). The same
    # tick: it is never trusted, so lookups list the directory. Never relisting on a timer keeps a
    # missed change missed.
    settle = 0.0 if tick == "later tick" else 3600.0
    reader = ParquetEmbeddingTable(directory, settle_seconds=settle, relist_seconds=float("inf"))
    before = _expected(None)
    assert reader.get_many(list("abcd"), "m1").found_ids == sorted(before)
    assert reader.has_ids("m1") == set(before) and reader.count("m1") == len(before)
    listed_mtime = os.stat(directory).st_mtime_ns

    change(table, v)
    if tick == "same tick":
        _same_tick(directory, listed_mtime)
    else:
        _next_tick(directory, listed_mtime)
    after = _expected(change)
    for looked_up in (reader, open_table(f"parquet:{directory}")):  # the long-lived reader, a fresh one
        assert looked_up.has_ids("m1") == set(after), (change.__name__, tick)
        assert looked_up.count("m1") == len(after)
        found = looked_up.get_many(list("abcd"), "m1")
        assert found.found_ids == sorted(after)
        np.testing.assert_array_equal(found.vectors, v[[after[i] for i in sorted(after)]])
        assert sorted(i for ids, _ in looked_up.scan("m1") for i in ids) == sorted(after)


def test_a_reader_trusts_a_stamp_only_after_seeing_it_settle(tmp_path):
    """Seen unchanged for longer than the filesystem's tick, the stamp shows every later change; before
    that, every lookup lists the directory, so writes in the stamp's own tick are not missed."""
    directory = tmp_path / "emb"
    table = open_table(f"parquet:{directory}")
    table.put_many(["a"], vectors(1), "m1")
    reader = ParquetEmbeddingTable(directory, settle_seconds=0.05, relist_seconds=float("inf"))
    assert reader.get_many(["a", "b"], "m1").found_ids == ["a"]
    mtime = os.stat(directory).st_mtime_ns
    for round_, note in enumerate("bcd"):  # each write in the same tick as the first listing
        table.put_many([note], vectors(1, seed=round_), "m1")
        _same_tick(directory, mtime)
        assert reader.get_many(["a", note], "m1").found_ids == ["a", note]
    import time

    time.sleep(0.06)
    assert reader.count("m1") == 4  # lists once more, now a settle period after first seeing the stamp
    table.put_many(["e"], vectors(1), "m1")  # a later write: the filesystem gives it a later mtime
    _next_tick(directory, mtime)
    assert reader.get_many(["e"], "m1").found_ids == ["e"]


def test_a_foreign_file_rewritten_in_place_is_seen_at_the_next_listing(tmp_path):
    """Writing into an existing file leaves the directory's stamp alone: readers list the directory
    every relist_seconds all the same."""
    import time

    directory = tmp_path / "spark"
    foreign_file(directory, SPARK_0, ["a"], vectors(1, seed=1))
    reader = ParquetEmbeddingTable(directory, settle_seconds=0.0, relist_seconds=0.05)
    np.testing.assert_array_equal(reader.get_many(["a"], "m1").vectors, vectors(1, seed=1))
    mtime = os.stat(directory).st_mtime_ns
    foreign_file(directory, SPARK_0, ["a", "b"], vectors(2, seed=2))  # truncates and rewrites the same file
    _same_tick(directory, mtime)
    time.sleep(0.06)
    found = reader.get_many(["a", "b"], "m1")
    assert found.found_ids == ["a", "b"]
    np.testing.assert_array_equal(found.vectors, vectors(2, seed=2))


def test_has_ids_reads_many_slices_the_same_warm_or_cold(tmp_path):
    from embedding.table.parquet import ID_SLICE

    directory = tmp_path / "emb"
    table = open_table(f"parquet:{directory}")
    count = 2 * ID_SLICE + 7
    ids = [f"n{i}" for i in range(count)]
    table.put_many(ids, np.zeros((count, DIM), np.float32), "m1")
    table.put_many(ids[:5] + ["new"], np.ones((6, DIM), np.float32), "m1")
    table.put_many(["other"], np.ones((1, DIM), np.float32), "m2")
    assert table.delete_many([ids[ID_SLICE], ids[-1]], "m1") == 2
    (directory / JOURNAL_NAME).write_text(json.dumps({"model_version": "m1", "note_ids": [ids[1]]}))
    expected = (set(ids) | {"new"}) - {ids[ID_SLICE], ids[-1], ids[1]}
    warm = ParquetEmbeddingTable(directory)
    assert warm.count("m1") == len(expected)  # reads the rows, which has_ids then takes its ids from
    assert warm.has_ids("m1") == expected
    assert ParquetEmbeddingTable(directory).has_ids("m1") == expected  # from the id column
    assert warm.has_ids("m2") == {"other"} and warm.has_ids("m3") == set()


def test_readers_follow_a_concurrent_writer(tmp_path):
    """A writer appends, deletes and compacts while readers look up: every lookup is one write's
    state (a and b from the same batch, never older than a lookup before it), and after the writer
    stops every reader sees its last write."""
    import threading

    directory = tmp_path / "emb"
    writer = open_table(f"parquet:{directory}")
    writer.put_many(["a", "b"], np.zeros((2, DIM), np.float32), "m1")
    batches = 30
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:
        try:
            for batch in range(1, batches + 1):
                writer.put_many(["a", "b", f"x{batch}"], np.full((3, DIM), batch, np.float32), "m1")
                if batch % 3 == 0:
                    writer.delete_many([f"x{batch}"], "m1")
                if batch % 10 == 0:
                    writer.compact()
        except Exception as exc:  # reported by the test thread
            failures.append(f"writer: {exc!r}")
        finally:
            done.set()

    def read(reader) -> None:
        newest = 0
        try:
            while not done.is_set() and not failures:
                found = reader.get_many(["a", "b"], "m1")
                batch = int(found.vectors[0, 0])
                if found.found_ids != ["a", "b"] or not (found.vectors == batch).all() or batch < newest:
                    failures.append(f"reader saw {found.found_ids} {found.vectors[:, 0]} after batch {newest}")
                newest = batch
        except Exception as exc:  # e.g. a part replaced between reading its footer and its pages
            failures.append(f"reader: {exc!r}")

    readers = [ParquetEmbeddingTable(directory) for _ in range(2)]
    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(r,)) for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    expected = {"a", "b"} | {f"x{batch}" for batch in range(1, batches + 1) if batch % 3}
    for reader in readers + [open_table(f"parquet:{directory}")]:
        np.testing.assert_array_equal(reader.get_many(["a", "b"], "m1").vectors, np.full((2, DIM), batches))
        assert reader.has_ids("m1") == expected


class ListingGoneStale(ParquetEmbeddingTable):
    """A reader whose first listing made while it reads a part is one taken before a compaction: what
    a reader sees when a writer compacts between opening a part and looking up the table's width."""

    def __init__(self, directory, stale) -> None:
        super().__init__(directory)
        self.stale, self.reading, self.went_stale = stale, False, False

    def _read_part(self, path, *args, **kwargs):
        self.reading = True
        try:
            return super()._read_part(path, *args, **kwargs)
        finally:
            self.reading = False

    def parts(self):
        if self.reading and not self.went_stale:
            self.went_stale = True
            return self.stale
        return super().parts()


def test_a_reader_whose_parts_were_compacted_away_mid_read_lists_again(tmp_path):
    directory = tmp_path / "emb"
    writer = open_table(f"parquet:{directory}")
    writer.put_many(["a"], np.full((1, DIM), 1, np.float32), "m1")
    writer.put_many(["b"], np.full((1, DIM), 2, np.float32), "m1")
    stale = writer.parts()
    writer.compact()  # the two parts above are gone, their rows in a new one
    assert not any(part.path.exists() for part in stale)

    reader = ListingGoneStale(directory, stale)
    found = reader.get_many(["a", "b"], "m1")
    assert found.found_ids == ["a", "b"]
    np.testing.assert_array_equal(found.vectors, [np.full(DIM, 1), np.full(DIM, 2)])
    assert reader.went_stale
