"""Reading what to index: one model version from a Parquet or Redis table, deletes files."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding.table import open_table
from i2i.core.errors import InputError
from index import jobs
from index.builder import BuildConfig
from index.source import choose_model_version, read_deletes, read_table
from index.store import IndexStore


def test_read_table_returns_every_embedding_of_the_model_version(corpus, model_version):
    embeddings = read_table(corpus.url, None)
    assert embeddings.model_version == model_version
    assert embeddings.note_ids == corpus.note_ids
    np.testing.assert_array_equal(embeddings.vectors, corpus.vectors)


def test_choose_model_version():
    assert choose_model_version(["a"], None, "t") == "a"
    assert choose_model_version(["a", "b"], "b", "t") == "b"
    with pytest.raises(InputError, match="several model versions"):
        choose_model_version(["a", "b"], None, "t")
    with pytest.raises(InputError, match="holds no embeddings"):
        choose_model_version([], None, "t")


def test_index_built_from_a_redis_table_finds_its_notes(tmp_path, redis_server, corpus, model_version):
    url = redis_server.url + "?prefix=idx-test"
    with open_table(url) as table:
        table.put_many(corpus.note_ids[:600], corpus.vectors[:600], model_version)
    summary = jobs.build_job(str(tmp_path / "idx"), url, BuildConfig(nlist=4))
    assert summary.ntotal == 600 and summary.model_version == model_version
    _, names = IndexStore(tmp_path / "idx").load(hold=False).search(corpus.vectors[:5], 1, nprobe=4)
    assert [row[0] for row in names] == corpus.note_ids[:5]
    with open_table(url) as table:
        table.delete_many(corpus.note_ids[:100], model_version)
    assert jobs.update_job(str(tmp_path / "idx"), url).ntotal == 500


def test_deletes_files_in_text_and_parquet(tmp_path):
    text = tmp_path / "d.txt"
    text.write_text("# header\n a \n\nb\n")
    assert read_deletes(text) == ["a", "b"]
    table_dir = tmp_path / "deletes"
    table_dir.mkdir()
    pq.write_table(pa.table({"note_id": ["x", "y"], "reason": ["spam", "dmca"]}), table_dir / "part-0.parquet")
    assert read_deletes(table_dir) == ["x", "y"]
    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no note_id column"):
        read_deletes(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="not found"):
        read_deletes(tmp_path / "absent.txt")
