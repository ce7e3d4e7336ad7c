"""The paper's protocol on a small fashion-notes set through the real chain: data -> cooccur -> pairs
--test-since -> eval --pool-since, with the random floor, the oracle ceiling and a paired difference."""
import json

import pyarrow.compute as pc
import pytest

from i2i.app.cli import main as i2i
from i2i.core.io import read_table

SINCE = "2026-11-04T00:00:00+00:00"  # the last 2 of 5 days


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    assert i2i(["data", "fashion-notes", "--out", str(root / "data"), "--notes", "700", "--users", "40",
                "--days", "5", "--test-days", "2", "--seed", "3"]) == 0
    assert i2i(["cooccur", "--events", str(root / "data" / "events"), "--out", str(root / "cooccur"),
                "--runner=DirectRunner"]) == 0
    assert i2i(["pairs", "--related", str(root / "cooccur" / "related"), "--notes", str(root / "data" / "notes"),
                "--out", str(root / "pairs"), "--test-since", SINCE, "--runner=DirectRunner"]) == 0
    return root


def run_eval(root, name, *extra):
    out = root / "eval" / name
    assert i2i(["eval", "--notes", str(root / "data" / "notes"), "--pairs", str(root / "pairs"), "--pool-since", SINCE,
                "--tokens", "whitespace", "--ks", "10,100,1000", "--out", str(out), "--json", str(root / f"{name}.json"),
                "--bootstrap", "200", *extra]) == 0
    return json.loads((root / f"{name}.json").read_text()), out


def test_pool_is_the_test_period_disjoint_from_training_notes(chain):
    notes = read_table(chain / "data" / "notes")
    published = dict(zip(notes.column("note_id").to_pylist(), notes.column("published_at").to_pylist()))
    since = max(published.values()).replace(hour=0, minute=0, second=0, microsecond=0)  # the last day
    pairs = read_table(chain / "pairs")
    train = pairs.filter(pc.not_equal(pairs.column("split"), "test"))
    train_notes = set(train.column("query_note_id").to_pylist()) | set(train.column("target_note_id").to_pylist())
    metrics, out = run_eval(chain, "oracle", "--baseline", "oracle")
    pool = {n for n, p in published.items() if p.isoformat() >= SINCE}
    assert metrics["pool_size"] == len(pool) and since.isoformat() >= SINCE
    assert not pool & train_notes
    ranks = read_table(out / "ranks.parquet")
    ranked = set(ranks.column("query_note_id").to_pylist()) | set(ranks.column("target_note_id").to_pylist())
    assert ranked <= pool
    test = pairs.filter(pc.equal(pairs.column("split"), "test"))
    assert metrics["pairs"] == test.num_rows > 20 and metrics["skipped_pairs"] == 0


def test_oracle_beats_random_and_the_paired_difference_says_so(chain):
    oracle, oracle_dir = run_eval(chain, "oracle", "--baseline", "oracle")
    random, _ = run_eval(chain, "random", "--baseline", "random", "--seed", "42", "--compare-to", str(oracle_dir))
    candidates = oracle["pool_size"] - 1
    r10 = random["groups"]["all"]["recall"]["R@10"]
    assert r10 < 10 / candidates + 0.1
    assert oracle["groups"]["all"]["recall"]["R@10"] > 0.4
    low, high = oracle["groups"]["all"]["interval"]["R@10"]
    assert low <= oracle["groups"]["all"]["recall"]["R@10"] <= high
    diff = random["extra"]["paired_difference"]
    assert diff["a"] == "random" and diff["b"] == "oracle" and diff["pairs_missing_in_b"] == 0
    d = diff["groups"]["all"]["R@10"]["difference"]
    assert d["high"] < 0 and d["value"] == pytest.approx(r10 - oracle["groups"]["all"]["recall"]["R@10"])
    # the random floor depends on its seed and only on it
    again, _ = run_eval(chain, "random_again", "--baseline", "random", "--seed", "42")
    other, _ = run_eval(chain, "random_other", "--baseline", "random", "--seed", "43")
    assert again["groups"] == random["groups"]
    assert read_table(chain / "eval" / "random_other" / "ranks.parquet").column("rank") != \
        read_table(chain / "eval" / "random" / "ranks.parquet").column("rank")


def test_protocol_inputs_are_checked(chain, capsys):
    base = ["eval", "--notes", str(chain / "data" / "notes"), "--pairs", str(chain / "pairs")]
    assert i2i([*base, "--baseline", "bm25", "--pool-since", "soon"]) == 2
    assert i2i([*base, "--baseline", "bm25", "--pool-since", "2030-01-01"]) == 2
    assert i2i([*base, "--baseline", "oracle", "--attributes", str(chain / "nowhere")]) == 2
    assert i2i([*base, "--baseline", "bm25", "--pool-since", SINCE, "--pool", "split"]) == 2
    assert i2i([*base, "--baseline", "random", "--compare-to", str(chain / "nowhere")]) == 2
    assert "--pool-since" in capsys.readouterr().err
