"""``i2i index ...`` through the real console-script dispatcher."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from i2i.app.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["index", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_subcommand_has_help():
    for command in ("build", "update", "rebuild", "info", "rollback", "gc"):
        result = subprocess.run([sys.executable, "-m", "i2i.app.cli", "index", command, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "--index-dir" in result.stdout


def test_lifecycle_prints_summaries(tmp_path, capsys, corpus):
    index_dir = str(tmp_path / "idx")
    code, out, _ = run(capsys, "build", "--index-dir", index_dir, "--table", corpus.url, "--nlist", "8")
    assert code == 0
    assert "build: published v000001" in out and "ntotal 1500" in out and "IVF8,Flat" in out and "train_s" in out
    deletes = tmp_path / "deletes.txt"
    deletes.write_text(corpus.note_ids[0] + "\n")
    code, out, _ = run(capsys, "update", "--index-dir", index_dir, "--table", corpus.url, "--deletes", str(deletes))
    assert code == 0
    assert "published v000002 (parent v000001)" in out and "removed 1" in out and "rebuild not needed" in out
    code, out, _ = run(capsys, "rebuild", "--index-dir", index_dir, "--table", corpus.url, "--keep", "2")
    assert code == 0 and "rebuild: published v000003" in out and "retention removed v000001" in out
    code, out, _ = run(capsys, "info", "--index-dir", index_dir, "--json")
    report = json.loads(out)
    assert report["current"] == "v000003"
    assert [(v["version"], v["operation"], v["ntotal"], v["tombstones"]) for v in report["versions"]] == [
        ("v000002", "update", 1499, 1), ("v000003", "rebuild", 1499, 1)]
    code, out, _ = run(capsys, "info", "--index-dir", index_dir, "--verify")
    assert code == 0 and "current v000003, 2 versions" in out and "m-test-1" in out
    code, out, _ = run(capsys, "rollback", "--index-dir", index_dir, "--to", "v000002")
    assert code == 0 and "CURRENT v000003 -> v000002" in out
    code, out, _ = run(capsys, "gc", "--index-dir", index_dir, "--keep", "1")
    assert code == 0 and "removed 0 versions" in out
    assert (tmp_path / "idx" / "CURRENT").read_text().strip() == "v000002"


@pytest.mark.parametrize("argv, message", [
    (["build", "--index-dir", "{tmp}/idx", "--table", "parquet:{tmp}/missing"], "holds no embeddings"),
    (["build", "--index-dir", "{tmp}/idx", "--table", "{url}", "--factory", "HNSW32"], "not a valid FAISS factory"),
    (["build", "--index-dir", "{tmp}/idx", "--table", "{url}", "--keep", "0"], "must be at least 1"),
    (["build", "--index-dir", "{tmp}/idx", "--table", "ftp://x"], "unknown embedding table url"),
    (["update", "--index-dir", "{tmp}/idx", "--table", "{url}"], "run 'i2i index build' first"),
    (["update", "--index-dir", "{tmp}/idx", "--table", "{url}", "--deletes", "{tmp}/nope.txt"], "deletes file not found"),
    (["rollback", "--index-dir", "{tmp}/idx", "--to", "latest"], "not a version name"),
    (["info", "--index-dir", "{tmp}/absent"], "index directory not found"),
    (["build", "--index-dir", "{tmp}/idx"], "--table"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, corpus, argv, message):
    argv = [a.format(tmp=tmp_path, url=corpus.url) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("i2i index: error:")]
    assert len(lines) == 1 and message in lines[0], err


def test_corrupt_version_is_refused_by_info_verify(tmp_path, capsys, corpus):
    index_dir = tmp_path / "idx"
    assert run(capsys, "build", "--index-dir", str(index_dir), "--table", corpus.url, "--nlist", "8")[0] == 0
    with open(index_dir / "versions" / "v000001" / "index.faiss", "ab") as handle:
        handle.write(b"\0")
    code, _, err = run(capsys, "info", "--index-dir", str(index_dir), "--verify")
    assert code == 1 and "checksum mismatch" in err and "index.faiss" in err  # a failure, not bad input


def test_rebuild_under_a_new_model_version_keeps_settings_and_tombstones(tmp_path, capsys, corpus):
    """After a retrain the table holds two model versions; rebuild --model-version follows the new one."""
    import numpy as np

    from index.store import IndexStore
    from tests.index.conftest import MODEL, clustered, write_embeddings

    index_dir = str(tmp_path / "idx")
    assert run(capsys, "build", "--index-dir", index_dir, "--table", corpus.url, "--nlist", "8",
               "--model-version", MODEL)[0] == 0
    deletes = tmp_path / "deletes.txt"
    deletes.write_text("\n".join(corpus.note_ids[:3]) + "\n")
    assert run(capsys, "update", "--index-dir", index_dir, "--table", corpus.url, "--deletes", str(deletes))[0] == 0
    new_vectors = clustered(np.random.default_rng(8), len(corpus.note_ids))
    write_embeddings(corpus.table_dir, corpus.note_ids, new_vectors, model_version="m-test-2", part=1)
    code, _, err = run(capsys, "update", "--index-dir", index_dir, "--table", corpus.url, "--model-version", "m-test-2")
    assert code == 2 and "build a new index" in err  # an update never mixes model versions
    code, _, err = run(capsys, "rebuild", "--index-dir", index_dir, "--table", corpus.url, "--model-version", "nope")
    assert code == 2 and "no embeddings for model version 'nope'" in err
    code, out, _ = run(capsys, "rebuild", "--index-dir", index_dir, "--table", corpus.url, "--model-version", "m-test-2")
    assert code == 0 and "rebuild: published v000003 (parent v000002)" in out and "model_version m-test-2" in out
    loaded = IndexStore(index_dir).load(hold=False)
    assert loaded.manifest_record.model_version == "m-test-2" and loaded.manifest_record.factory.endswith(",Flat")
    assert loaded.contents.tombstones == set(corpus.note_ids[:3]) and loaded.ntotal == len(corpus.note_ids) - 3
    _, names = loaded.search(new_vectors[3:8], 1, nprobe=8)  # the new model's vectors find their notes
    assert [row[0] for row in names] == corpus.note_ids[3:8]
