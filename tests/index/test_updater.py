"""Incremental updates: same contents as a fresh build, deletions that stick, model versions never mixed."""
from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faiss.contrib.inspect_tools import get_invlist

from embedding.table import open_table
from i2i.core.errors import InputError
from index import jobs
from index.builder import BuildConfig
from index.source import from_arrays
from index.store import IndexStore
from index.updater import apply_update

CONFIG = BuildConfig(nlist=8)


def contents_of(loaded) -> dict[str, bytes]:
    """note_id -> the float32 vector bytes stored in the IVF-Flat lists (what search can return)."""
    ivf = faiss.extract_index_ivf(loaded.index)
    out = {}
    for list_no in range(ivf.nlist):
        ids, codes = get_invlist(ivf.invlists, list_no)
        names = loaded.ids.note_ids_of(ids)
        for name, code in zip(names.tolist(), codes.reshape(len(ids), -1)):
            assert name not in out
            out[name] = code.tobytes()
    return out


def change_table(corpus, rng, make_vectors, model_version) -> dict:
    """Adds notes, re-embeds some and deletes some through the table API."""
    added = [f"new-{i}" for i in range(40)]
    reembedded = corpus.note_ids[100:130]
    deleted = corpus.note_ids[200:250]
    with open_table(corpus.url) as table:
        table.put_many(added, make_vectors(rng, len(added)), model_version)
        table.put_many(reembedded, make_vectors(rng, len(reembedded)), model_version)
        assert table.delete_many(deleted, model_version) == len(deleted)
    return {"added": added, "reembedded": reembedded, "deleted": deleted}


def test_update_gives_the_same_contents_as_a_fresh_build(tmp_path, corpus, make_vectors, model_version):
    jobs.build_job(str(tmp_path / "updated"), corpus.url, CONFIG)
    before = IndexStore(tmp_path / "updated").load(hold=False)
    changes = change_table(corpus, np.random.default_rng(11), make_vectors, model_version)
    summary = jobs.update_job(str(tmp_path / "updated"), corpus.url)
    assert (len(summary.plan.adds), len(summary.plan.replaces), len(summary.plan.removes)) == (40, 30, 50)
    assert summary.plan.unchanged == len(corpus.note_ids) - 30 - 50
    jobs.build_job(str(tmp_path / "fresh"), corpus.url, CONFIG)
    updated = IndexStore(tmp_path / "updated").load(hold=False)
    fresh = IndexStore(tmp_path / "fresh").load(hold=False)
    assert updated.ntotal == fresh.ntotal == len(corpus.note_ids) + 40 - 50
    assert contents_of(updated) == contents_of(fresh)
    # Re-embedded notes keep their id; the parent version still holds the old vectors.
    note = changes["reembedded"][0]
    assert updated.ids.id_of(note) == before.ids.id_of(note)
    assert contents_of(before)[note] != contents_of(updated)[note]


def test_update_with_pq_keeps_rerank_vectors_in_step(tmp_path, corpus, make_vectors, model_version):
    config = BuildConfig(factory="PQ4", nlist=8)
    jobs.build_job(str(tmp_path / "idx"), corpus.url, config)
    changes = change_table(corpus, np.random.default_rng(12), make_vectors, model_version)
    jobs.update_job(str(tmp_path / "idx"), corpus.url)
    loaded = IndexStore(tmp_path / "idx").load(hold=False)
    with open_table(corpus.url) as table:
        lookup = table.get_many(changes["added"] + changes["reembedded"], model_version)
    _, names = loaded.search(lookup.vectors, 1, nprobe=8)
    assert [row[0] for row in names] == lookup.found_ids
    live = loaded.ids.live_ids()
    assert len(live) == loaded.ntotal
    stored = np.asarray(loaded.contents.vectors)[loaded.ids.ids_of(lookup.found_ids)]
    np.testing.assert_allclose(stored, lookup.vectors / np.linalg.norm(lookup.vectors, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("deletes_format", ["text", "parquet"])
def test_deleted_notes_never_come_back(tmp_path, corpus, make_vectors, model_version, deletes_format):
    index_dir = str(tmp_path / "idx")
    jobs.build_job(index_dir, corpus.url, CONFIG)
    table_deleted = corpus.note_ids[:10]
    with open_table(corpus.url) as table:
        table.delete_many(table_deleted, model_version)
    # Taken down, while the table still holds their embeddings:
    listed = corpus.note_ids[10:20]
    if deletes_format == "text":
        deletes = tmp_path / "deletes.txt"
        deletes.write_text("# taken down\n" + "\n".join(listed) + "\n\n")
    else:
        deletes = tmp_path / "deletes.parquet"
        pq.write_table(pa.table({"note_id": listed}), deletes)
    jobs.update_job(index_dir, corpus.url, deletes_path=str(deletes))
    jobs.update_job(index_dir, corpus.url)
    jobs.rebuild_job(index_dir, corpus.url, nlist=4)
    jobs.update_job(index_dir, corpus.url)
    store = IndexStore(index_dir)
    for version in store.versions()[1:]:
        loaded = store.load(version, hold=False)
        gone = table_deleted + listed
        assert not any(note in loaded.ids for note in gone), version
        _, names = loaded.search(corpus.vectors[:20], 5, nprobe=8)
        assert not set(gone) & {n for row in names for n in row}
        assert loaded.contents.tombstones == set(listed)
    assert store.load(hold=False).ntotal == len(corpus.note_ids) - 20


def test_an_update_without_changes_publishes_an_identical_child(tmp_path, corpus):
    jobs.build_job(str(tmp_path / "idx"), corpus.url, CONFIG)
    summary = jobs.update_job(str(tmp_path / "idx"), corpus.url)
    assert summary.plan.changes == 0 and summary.plan.unchanged == len(corpus.note_ids)
    store = IndexStore(tmp_path / "idx")
    assert contents_of(store.load("v000001", hold=False)) == contents_of(store.load("v000002", hold=False))
    assert summary.advice == []


def test_model_versions_are_never_mixed(tmp_path, corpus, make_vectors, model_version):
    with open_table(corpus.url) as table:
        table.put_many(corpus.note_ids[:50], make_vectors(np.random.default_rng(3), 50), "m-test-2")
    with pytest.raises(InputError, match="several model versions"):
        jobs.build_job(str(tmp_path / "idx"), corpus.url, CONFIG)
    with pytest.raises(InputError, match="no embeddings for model version 'nope'"):
        jobs.build_job(str(tmp_path / "idx"), corpus.url, CONFIG, model_version="nope")
    jobs.build_job(str(tmp_path / "idx"), corpus.url, CONFIG, model_version=model_version)
    with pytest.raises(InputError, match="refusing to update it with model version 'm-test-2'"):
        jobs.update_job(str(tmp_path / "idx"), corpus.url, model_version="m-test-2")
    loaded = IndexStore(tmp_path / "idx").load(hold=False)
    other = from_arrays(corpus.note_ids[:50], corpus.vectors[:50], "m-test-2")
    with pytest.raises(InputError, match="refusing to add embeddings of model version 'm-test-2'"):
        apply_update(loaded.manifest_record, loaded.contents, other, [])
    with open_table(corpus.url) as table:
        table.delete_many(corpus.note_ids, model_version)
    with pytest.raises(InputError, match=f"no embeddings for model version '{model_version}'"):
        jobs.update_job(str(tmp_path / "idx"), corpus.url)
    assert IndexStore(tmp_path / "idx").versions() == ["v000001"]


def test_growth_and_imbalance_trigger_rebuild_advice(tmp_path, corpus, make_vectors, model_version):
    with open_table(corpus.url) as table:
        table.delete_many(corpus.note_ids[300:], model_version)
    jobs.build_job(str(tmp_path / "idx"), corpus.url, BuildConfig(nlist=4))
    with open_table(corpus.url) as table:
        # Five times the corpus, all near one point: far beyond the training sample, and one list swells.
        rng = np.random.default_rng(4)
        centre = corpus.vectors[0]
        crowd = centre + 0.01 * rng.standard_normal((1500, centre.size)).astype(np.float32)
        table.put_many([f"crowd-{i}" for i in range(1500)], crowd, model_version)
    summary = jobs.update_job(str(tmp_path / "idx"), corpus.url)
    reasons = " | ".join(summary.advice)
    assert "imbalance" in reasons and "grew to 1800 vectors, 6.0x" in reasons
    assert any("rebuild advised" in line for line in summary.lines())
    rebuilt = jobs.rebuild_job(str(tmp_path / "idx"), corpus.url)
    assert rebuilt.nlist > 4 and rebuilt.ntotal == 1800
    assert jobs.info(str(tmp_path / "idx"))["rebuild_advice"] == []


def test_a_note_reembedded_and_deleted_on_the_same_day_is_removed(tmp_path, corpus, make_vectors, model_version):
    index_dir = str(tmp_path / "idx")
    jobs.build_job(index_dir, corpus.url, CONFIG)
    both = corpus.note_ids[300:305]
    new_vectors = make_vectors(np.random.default_rng(5), len(both))
    with open_table(corpus.url) as table:  # the day's embedding job re-embeds them ...
        table.put_many(both, new_vectors, model_version)
    deletes = tmp_path / "deletes.txt"  # ... and the same day's deletes take them down
    deletes.write_text("\n".join(both) + "\n")
    summary = jobs.update_job(index_dir, corpus.url, deletes_path=str(deletes))
    assert summary.plan.removes == sorted(both)
    assert not set(both) & set(summary.plan.replaces + summary.plan.adds)
    for _ in range(2):  # and the next day's update, with the table still holding the new vectors
        loaded = IndexStore(index_dir).load(hold=False)
        assert not any(note in loaded.ids for note in both)
        assert loaded.ntotal == len(corpus.note_ids) - len(both)
        _, names = loaded.search(new_vectors, 5, nprobe=8)
        assert not set(both) & {n for row in names for n in row}
        jobs.update_job(index_dir, corpus.url)
