"""Averaging evaluations over seeds per pair, and the paired difference of two seed-averaged methods."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding.seed_average import averaged_metrics, paired_seed_difference
from i2i.core.errors import InputError


def write_run(directory, ranks, pairs=(("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")), tokens=(10, 80, 10, 80)):
    directory.mkdir(parents=True)
    pq.write_table(pa.table({
        "query_note_id": [q for q, _ in pairs], "target_note_id": [t for _, t in pairs], "rank": list(ranks),
        "query_tokens": list(tokens), "target_tokens": [80] * len(pairs)}), directory / "ranks.parquet")
    metrics = {"method": "m", "split": "test", "pool_size": 5000, "pairs": len(pairs), "skipped_pairs": 0,
               "ks": [100, 1000], "capped_ks": [], "short_tokens": 50, "long_tokens": 165,
               "token_counter": "whitespace", "groups": {"all": {"pairs": len(pairs), "recall": {}}}}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_seeds_are_averaged_per_pair_and_grouped_by_tokens(tmp_path):
    runs = [write_run(tmp_path / "s42", [1, 200, 3000, 50]), write_run(tmp_path / "s43", [1, 50, 3000, 500])]
    metrics = averaged_metrics(runs, bootstrap=200)
    assert metrics["runs"] == 2
    assert metrics["groups"]["all"]["recall"]["R@100"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert metrics["groups"]["all"]["recall"]["R@1k"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    short = metrics["groups"]["short_query"]  # pairs a-b and e-f have 10-token queries
    assert short["pairs"] == 2 and short["recall"]["R@100"] == pytest.approx(0.5)
    low, high = metrics["groups"]["all"]["interval"]["R@100"]
    assert 0 <= low <= 0.5 <= high <= 1


def test_runs_over_other_pairs_cannot_be_averaged(tmp_path):
    one = write_run(tmp_path / "one", [1, 2, 3, 4])
    other = write_run(tmp_path / "other", [1, 2, 3, 4], pairs=(("a", "b"), ("c", "d"), ("e", "f"), ("x", "y")))
    with pytest.raises(InputError):
        averaged_metrics([one, other])


def test_paired_seed_difference_on_shared_pairs(tmp_path):
    a = [write_run(tmp_path / "a1", [1, 1, 1, 5000]), write_run(tmp_path / "a2", [1, 1, 5000, 5000])]
    b = [write_run(tmp_path / "b1", [1, 5000, 5000, 5000])]
    diff = paired_seed_difference(a, b, ["all", "short_query"], [100], bootstrap=200)
    d = diff["groups"]["all"]["R@100"]
    assert diff["pairs_compared"] == 4
    assert d["a"] == pytest.approx(2.5 / 4) and d["b"] == pytest.approx(0.25)
    assert d["difference"]["value"] == pytest.approx(2.5 / 4 - 0.25)
    assert diff["groups"]["short_query"]["R@100"]["difference"]["value"] == pytest.approx((1 + 0.5) / 2 - 0.5)
