"""`i2i eval` end to end: baselines, an embedding table and a tiny checkpoint on small tables."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from i2i.app.cli import main as i2i
from i2i.core.io import write_table
from i2i.core.schemas import NOTES, PAIRS

TOPICS = ["sailing", "pottery", "espresso", "origami", "falconry", "beekeeping", "archery", "calligraphy"]


def make_notes(count_per_topic: int = 2, long_words: int = 0) -> list[dict]:
    """Two notes per rare topic word, so a lexical ranker finds each note's partner first."""
    notes = []
    for t, topic in enumerate(TOPICS):
        for j in range(count_per_topic):
            filler = " ".join(["story"] * long_words) if t == 0 and j == 0 else ""
            notes.append({
                "note_id": f"n{t}_{j}", "title": f"{topic} day {j}", "topics": [topic],
                "content": f"notes about {topic} and {topic} again {filler}".strip(),
                "image": None, "published_at": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
            })
    return notes


@pytest.fixture
def tables(tmp_path):
    notes = make_notes(long_words=200)
    write_table(pa.Table.from_pylist(notes, schema=NOTES), tmp_path / "notes")
    pairs = [{"query_note_id": f"n{t}_0", "target_note_id": f"n{t}_1", "score": 1.0,
              "split": "test" if t % 2 == 0 else "train"} for t in range(len(TOPICS))]
    pairs.append({"query_note_id": "n1_0", "target_note_id": "gone", "score": 1.0, "split": "test"})
    write_table(pa.Table.from_pylist(pairs, schema=PAIRS), tmp_path / "pairs")
    return tmp_path


def run_eval(tables, *extra: str) -> int:
    return i2i(["eval", "--notes", str(tables / "notes"), "--pairs", str(tables / "pairs"), *extra])


def test_bm25_baseline_end_to_end_writes_metrics_ranks_and_plot(tables, capsys):
    out = tables / "eval"
    code = run_eval(tables, "--baseline", "bm25", "--tokens", "whitespace", "--out", str(out),
                    "--plot", str(tables / "curve.png"), "--short-tokens", "12", "--long-tokens", "100")
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 pairs ranked against a pool of 16 notes (1 pairs skipped)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "bm25" and metrics["split"] == "test"
    assert metrics["pool_size"] == 16 and metrics["pairs"] == 4 and metrics["skipped_pairs"] == 1
    assert metrics["capped_ks"] == [100, 1000, 10000]
    assert metrics["groups"]["all"]["recall"]["R@100"] == 1.0
    # n0_0 has 200 filler words: the only long query; every other test query is short
    assert metrics["groups"]["long_query"]["pairs"] == 1
    assert metrics["groups"]["short_query"]["pairs"] == 3
    ranks = pq.read_table(out / "ranks.parquet").to_pylist()
    assert [r["rank"] for r in ranks] == [1, 1, 1, 1]
    assert {r["query_note_id"] for r in ranks} == {"n0_0", "n2_0", "n4_0", "n6_0"}
    assert (out / "metrics.md").read_text().startswith("### bm25 — split test")
    assert (tables / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_split_pool_holds_only_notes_named_by_the_split(tables):
    out = tables / "eval"
    assert run_eval(tables, "--baseline", "bm25", "--tokens", "whitespace", "--pool", "split",
                    "--split", "train", "--ks", "1,2", "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pool_size"] == 8 and metrics["pairs"] == 4
    assert metrics["groups"]["all"]["recall"] == {"R@1": 1.0, "R@2": 1.0}
    assert metrics["extra"]["pool"] == "split"


def test_embedding_table_is_evaluated_for_its_model_version(tables, capsys):
    from embedding.table import open_table

    notes = make_notes()
    ids = [n["note_id"] for n in notes]
    # each topic's two notes share a direction; n2_1 is made to point elsewhere (a miss)
    vectors = np.zeros((len(ids), len(TOPICS)), dtype=np.float32)
    for i, note_id in enumerate(ids):
        vectors[i, int(note_id[1])] = 1.0
    vectors[ids.index("n2_1")] = 0.0
    vectors[ids.index("n2_1"), 7] = 1.0
    url = f"parquet:{tables / 'emb'}"
    with open_table(url) as table:
        table.put_many(ids[:-1], vectors[:-1], "v1")  # the last note has no embedding
        table.put_many(ids, -vectors, "v2")
    assert run_eval(tables, "--table", url) == 2
    assert "choose one with --model-version" in capsys.readouterr().err
    out = tables / "eval"
    assert run_eval(tables, "--table", url, "--model-version", "v1", "--tokens", "whitespace",
                    "--ks", "1,3", "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pool_size"] == 15 and metrics["extra"]["missing_embeddings"] == 1
    ranks = {r["query_note_id"]: r["rank"] for r in pq.read_table(out / "ranks.parquet").to_pylist()}
    assert ranks["n0_0"] == 1 and ranks["n4_0"] == 1 and ranks["n6_0"] == 1
    # n2_1 ties at 0 with the 13 other notes outside topic 2: it comes after all of them
    assert ranks["n2_0"] == 14
    assert metrics["groups"]["all"]["recall"] == {"R@1": 0.75, "R@3": 0.75}


def test_bad_inputs_exit_2_with_one_line_reasons(tables, capsys):
    assert run_eval(tables, "--baseline", "bm25", "--split", "val") == 2
    assert "no pairs of split 'val'" in capsys.readouterr().err
    assert i2i(["eval", "--notes", str(tables / "missing"), "--pairs", str(tables / "pairs"), "--baseline", "bm25"]) == 2
    assert "table not found" in capsys.readouterr().err
    assert run_eval(tables, "--baseline", "bm25", "--ks", "100,x") == 2
    assert "--ks must be comma-separated integers" in capsys.readouterr().err
    assert run_eval(tables, "--checkpoint", str(tables / "nope")) == 2
    assert "not found" in capsys.readouterr().err
    write_table(pa.table({"query_note_id": ["a"], "target_note_id": ["b"]}), tables / "badpairs")
    assert i2i(["eval", "--notes", str(tables / "notes"), "--pairs", str(tables / "badpairs"), "--baseline", "bm25"]) == 2
    assert "split: missing column" in capsys.readouterr().err


def test_tiny_checkpoint_end_to_end(tables, tmp_path):
    from embedding import testing
    from embedding.checkpoint import load_encoder

    checkpoint = testing.make_tiny_checkpoint(str(tmp_path / "ckpt"), variant="notellm2", seed=0)
    out = tables / "eval"
    assert run_eval(tables, "--checkpoint", checkpoint, "--device", "cpu", "--out", str(out),
                    "--plot", str(out / "curve.png")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    encoder = load_encoder(checkpoint, device="cpu")
    assert encoder.model_version[:12] in metrics["method"]
    assert metrics["pairs"] == 4 and metrics["pool_size"] == 16
    assert metrics["token_counter"].endswith("tokenizer")
    # the ranks agree with a direct ranking of the encoder's embeddings
    notes = make_notes(long_words=200)
    vectors = encoder.encode(notes)
    ids = [n["note_id"] for n in notes]
    for row in pq.read_table(out / "ranks.parquet").to_pylist():
        q, t = ids.index(row["query_note_id"]), ids.index(row["target_note_id"])
        scores = vectors @ vectors[q]
        others = np.delete(scores, [q, t])
        assert row["rank"] == int((others >= scores[t]).sum()) + 1
    assert (out / "curve.png").exists()
