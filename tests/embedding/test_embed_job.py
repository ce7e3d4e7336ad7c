"""The batch embedding job: incremental runs, resume after a kill, dead letters, the model-version guard."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from embedding.checkpoint import load_encoder
from embedding.embed_job import EmbedJobConfig, run_embed_job
from embedding.table import ModelVersionMismatch, open_table
from embedding.table.parquet import ParquetEmbeddingTable
from embedding.testing import make_notes, make_tiny_checkpoint, notes_table, png_bytes
from i2i.app.cli import main as i2i_main
from i2i.core.io import read_table, write_table
from i2i.core.schemas import NOTES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return load_encoder(checkpoint, device="cpu")


def write_notes(directory: Path, notes: list[dict]) -> str:
    write_table(notes_table(notes), directory)
    return str(directory)


def job(notes: str, checkpoint: str, table: str, **options) -> EmbedJobConfig:
    return EmbedJobConfig(notes=notes, checkpoint=checkpoint, table=table, progress=False, **options)


def test_embeds_every_note_like_the_encoder(tmp_path, checkpoint, encoder):
    notes = make_notes(24)
    path = write_notes(tmp_path / "notes", notes)
    summary = run_embed_job(job(path, checkpoint, f"parquet:{tmp_path}/emb", batch_size=5, chunk_size=10), encoder)
    assert (summary.notes_read, summary.embedded, summary.chunks_written, summary.table_count) == (24, 24, 3, 24)
    lookup = open_table(f"parquet:{tmp_path}/emb").get_many([n["note_id"] for n in notes], encoder.model_version)
    assert lookup.missing_ids == []
    np.testing.assert_allclose(lookup.vectors, encoder.encode(notes), atol=1e-4)


def test_second_run_embeds_only_new_notes_and_all_reembeds(tmp_path, checkpoint, encoder):
    notes = make_notes(30)
    table = f"parquet:{tmp_path}/emb"
    first = run_embed_job(job(write_notes(tmp_path / "n1", notes[:20]), checkpoint, table), encoder)
    assert first.embedded == 20
    grown = write_notes(tmp_path / "n2", notes)
    second = run_embed_job(job(grown, checkpoint, table), encoder)
    assert (second.already_embedded, second.embedded, second.table_count) == (20, 10, 30)
    third = run_embed_job(job(grown, checkpoint, table), encoder)
    assert third.embedded == 0
    everything = run_embed_job(job(grown, checkpoint, table, all_notes=True, compact=True), encoder)
    assert (everything.embedded, everything.table_count) == (30, 30)
    assert ds.dataset(f"{tmp_path}/emb", format="parquet").count_rows() == 30  # compacted: one row per key


def test_killed_run_resumes_without_duplicates(tmp_path, checkpoint):
    notes = make_notes(240)
    path = write_notes(tmp_path / "notes", notes)
    table_dir = tmp_path / "emb"
    command = [sys.executable, "-m", "i2i.app.cli", "embed", "--notes", path, "--checkpoint", checkpoint,
               "--table", f"parquet:{table_dir}", "--chunk-size", "8", "--batch-size", "4", "--no-progress",
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    table = ParquetEmbeddingTable(table_dir)
    deadline = time.monotonic() + 120
    while len(table.parts()) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    survived = ds.dataset(str(table_dir), format="parquet").to_table()  # a valid table, whole chunks only
    assert 0 < survived.num_rows < 240 and survived.num_rows % 8 == 0
    summary = run_embed_job(job(path, checkpoint, f"parquet:{table_dir}"))
    assert summary.already_embedded == survived.num_rows
    assert summary.embedded == 240 - survived.num_rows
    rows = ds.dataset(str(table_dir), format="parquet").to_table()
    assert rows.num_rows == 240 and len(set(rows.column("note_id").to_pylist())) == 240


def test_bad_notes_are_dead_lettered_or_embedded_without_image(tmp_path, checkpoint, encoder):
    notes = make_notes(8)
    notes[0]["image"] = b"not an image at all"
    notes[1]["image"] = None
    notes[2].update(title="", topics=[], content="")
    notes[3]["content"] = "word " * 5000
    notes.append(dict(notes[4], title="a second row with the same id"))
    notes.append(dict(notes[5], note_id=""))
    notes.append(dict(notes[5], note_id=None))
    loose = NOTES.set(0, NOTES.field("note_id").with_nullable(True))  # as a careless producer writes it
    write_table(pa.Table.from_pylist(notes, schema=loose), tmp_path / "notes")
    path = str(tmp_path / "notes")
    summary = run_embed_job(job(path, checkpoint, f"parquet:{tmp_path}/emb"), encoder)
    assert (summary.notes_read, summary.embedded, summary.dead_lettered) == (11, 8, 3)
    assert (summary.images_missing, summary.images_undecodable) == (1, 1)
    dead = read_table(summary.dead_letter_path).to_pylist()
    assert sorted(row["reason"].split(" (")[0] for row in dead) == [
        "duplicate note_id", "empty or null note_id", "empty or null note_id"]
    assert "a second row with the same id" in next(r["raw"] for r in dead if r["reason"].startswith("duplicate"))
    assert Path(summary.dead_letter_path).parent == tmp_path


def test_model_version_guard(tmp_path, checkpoint, encoder):
    path = write_notes(tmp_path / "notes", make_notes(6))
    table_url = f"parquet:{tmp_path}/emb"
    run_embed_job(job(path, checkpoint, table_url), encoder)
    other = load_encoder(make_tiny_checkpoint(str(tmp_path / "other"), seed=1), device="cpu")
    assert other.model_version != encoder.model_version
    table = open_table(table_url)
    with pytest.raises(ModelVersionMismatch, match=other.model_version):
        table.get_many(["n0000"], other.model_version)
    summary = run_embed_job(job(path, str(tmp_path / "other"), table_url), other)
    assert summary.embedded == 6  # a new model embeds every note again, beside the old version
    assert table.model_versions() == sorted([encoder.model_version, other.model_version])


def test_redis_table(redis_server, tmp_path, checkpoint, encoder):
    notes = make_notes(12)
    url = redis_server.url + "?prefix=job"
    run_embed_job(job(write_notes(tmp_path / "a", notes[:7]), checkpoint, url, chunk_size=4), encoder)
    summary = run_embed_job(job(write_notes(tmp_path / "b", notes), checkpoint, url, chunk_size=4), encoder)
    assert (summary.already_embedded, summary.embedded, summary.table_count) == (7, 5, 12)
    lookup = open_table(url).get_many(["n0011", "n0002"], encoder.model_version)
    np.testing.assert_allclose(lookup.vectors, encoder.encode([notes[11], notes[2]]), atol=1e-4)


def test_cli_prints_a_summary_and_refuses_bad_input(tmp_path, checkpoint, capsys):
    path = write_notes(tmp_path / "notes", make_notes(4))
    table = f"parquet:{tmp_path}/emb"
    code = i2i_main(["embed", "--notes", path, "--checkpoint", checkpoint, "--table", table, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "embedded        4 in 1 chunks" in out and str(tmp_path / "emb") in out
    assert i2i_main(["embed", "--notes", str(tmp_path / "nope"), "--checkpoint", checkpoint, "--table", table]) == 2
    assert "notes table not found" in capsys.readouterr().err
    write_table(pa.table({"note_id": ["a"]}), tmp_path / "thin")
    assert i2i_main(["embed", "--notes", str(tmp_path / "thin"), "--checkpoint", checkpoint, "--table", table]) == 2
    assert "missing column" in capsys.readouterr().err
    assert i2i_main(["embed", "--notes", path, "--checkpoint", str(tmp_path), "--table", table]) == 2
    assert i2i_main(["embed", "--notes", path, "--checkpoint", checkpoint, "--table", "mysql://x"]) == 2
    assert i2i_main(["embed", "--notes", path, "--checkpoint", checkpoint, "--table", table, "--batch-size", "0"]) == 2
    assert i2i_main(["embed", "--notes", path, "--checkpoint", checkpoint, "--table", table, "--runner=X"]) == 2


def test_images_are_really_used(tmp_path, checkpoint, encoder):
    """Guards the image counting above: a decodable image changes the embedding."""
    note = make_notes(1)[0]
    plain = dict(note, image=None)
    other = dict(note, image=png_bytes((10, 200, 10), seed=3))
    vectors = encoder.encode([note, plain, other])
    assert not np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2])
