"""Recall evaluation on hand-made rankings: exact ranks, self exclusion, ties, capping, groups."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedding.evaluation import (
    DenseScorer,
    EvalConfig,
    EvalResult,
    evaluate,
    pair_groups,
    plot_recall_curves,
    recall_curve,
    resolve_pairs,
    target_ranks,
    write_result,
)
from i2i.core.errors import InputError


class MatrixScorer:
    """A scorer whose every score is written by hand."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = torch.tensor(scores, dtype=torch.float32)
        self.pool_size = self.scores.shape[1]

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        return self.scores[torch.from_numpy(np.asarray(query_positions))]


# Row i: scores of query i against notes 0..5. The query's own score is high to show it is excluded.
HAND_SCORES = np.array([
    [9.0, 0.9, 0.8, 0.7, 0.6, 0.5],  # query 0
    [0.1, 9.0, 0.2, 0.3, 0.4, 0.5],  # query 1
    [0.5, 0.4, 9.0, 0.3, 0.2, 0.1],  # query 2
    [0.0, 0.0, 0.0, 9.0, 0.0, 0.0],  # query 3: everything tied
])


def test_ranks_on_hand_made_scores_exclude_the_query_itself():
    scorer = MatrixScorer(HAND_SCORES)
    queries = np.array([0, 0, 1, 2, 3])
    targets = np.array([1, 5, 2, 5, 4])
    ranks = target_ranks(scorer, queries, targets)
    # q0->1 best of others: 1; q0->5 last of 5 others: 5; q1->2: notes 5,4,3 above: 4;
    # q2->5 lowest: 5; q3->4 tied with all 4 other candidates: counted after them: 5
    assert ranks.tolist() == [1, 5, 4, 5, 5]


def test_recall_values_on_hand_made_ranking_are_exact():
    scorer = MatrixScorer(HAND_SCORES)
    pairs = resolve_pairs(["a", "b", "c", "d", "e", "f"], ["a", "a", "b", "c", "d"], ["b", "f", "c", "f", "e"])
    tokens = np.array([10, 100, 200, 10, 100, 100])
    config = EvalConfig(ks=(1, 4, 5), short_tokens=50, long_tokens=165)
    result, ranks = evaluate("hand", "test", scorer, pairs, tokens, "given", config)
    assert ranks.tolist() == [1, 5, 4, 5, 5]
    assert result.groups["all"].recall == {"R@1": pytest.approx(1 / 5), "R@4": pytest.approx(2 / 5), "R@5": 1.0}
    # short queries are notes a (0) and d (3): pairs 0, 1, 4 with ranks 1, 5, 5
    assert result.groups["short_query"].pairs == 3
    assert result.groups["short_query"].recall["R@1"] == pytest.approx(1 / 3)
    # long target: note c (2) only, pair 2 with rank 4
    assert result.groups["long_target"].pairs == 1
    assert result.groups["long_target"].recall == {"R@1": 0.0, "R@4": 1.0, "R@5": 1.0}
    # k = 5 equals the 5 candidates: capped and said so
    assert result.capped_ks == [5]
    assert "R@5*" in result.to_markdown() and "capped at the pool size" in result.to_markdown()


def test_ks_above_pool_size_are_capped_and_flagged():
    vectors = np.eye(4, dtype=np.float32)
    pairs = resolve_pairs(["a", "b", "c", "d"], ["a", "b"], ["b", "c"])
    result, ranks = evaluate("eye", "test", DenseScorer(vectors, "cpu"), pairs, np.zeros(4, dtype=int), "given",
                             EvalConfig(ks=(1, 100, 1000, 10000)))
    assert ranks.tolist() == [3, 3]  # all other scores tie at 0: the target comes after them
    assert result.capped_ks == [100, 1000, 10000]
    assert result.groups["all"].recall["R@1"] == 0.0
    assert result.groups["all"].recall["R@10k"] == 1.0  # measured at k = 3 candidates
    assert result.candidates == 3


def test_dense_scorer_ranks_nearest_neighbour_first_and_ignores_identical_query():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    nearest = scores.argmax(axis=1)
    farthest = np.where(np.isinf(scores), np.inf, scores).argmin(axis=1)
    queries = np.arange(50)
    ranks = target_ranks(DenseScorer(vectors, "cpu"), queries, nearest)
    assert (ranks == 1).all()
    assert (target_ranks(DenseScorer(vectors, "cpu"), queries, farthest) == 49).all()


def test_chunked_ranking_matches_one_chunk():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(64, 4)).astype(np.float32)
    queries = rng.integers(0, 64, size=200)
    targets = (queries + rng.integers(1, 64, size=200)) % 64
    whole = target_ranks(DenseScorer(vectors, "cpu"), queries, targets, EvalConfig(max_scores_per_chunk=1 << 20))
    chunked = target_ranks(DenseScorer(vectors, "cpu"), queries, targets, EvalConfig(max_scores_per_chunk=64 * 3))
    brute = [(np.delete(vectors @ vectors[q], [q, t]) >= vectors[t] @ vectors[q]).sum() + 1 for q, t in zip(queries, targets)]
    assert chunked.tolist() == whole.tolist() == brute


def test_nan_target_score_is_a_miss():
    scores = np.array([[1.0, np.nan, 0.5, 0.2]])
    assert target_ranks(MatrixScorer(scores), np.array([0]), np.array([1])).tolist() == [3]


def test_short_and_long_classification_uses_strict_thresholds():
    query_tokens = np.array([49, 50, 165, 166, 10])
    target_tokens = np.array([200, 0, 49, 170, 165])
    groups = pair_groups(query_tokens, target_tokens, EvalConfig(short_tokens=50, long_tokens=165))
    assert groups["short_query"].tolist() == [True, False, False, False, True]
    assert groups["short_target"].tolist() == [False, True, True, False, False]
    assert groups["long_query"].tolist() == [False, False, False, True, False]
    assert groups["long_target"].tolist() == [True, False, False, True, False]
    assert groups["all"].all()


def test_empty_group_has_no_recall_and_shows_a_dash(tmp_path):
    pairs = resolve_pairs(["a", "b", "c"], ["a"], ["b"])
    result, _ = evaluate("eye", "val", DenseScorer(np.eye(3, dtype=np.float32), "cpu"), pairs,
                         np.array([100, 100, 100]), "given", EvalConfig(ks=(1,)))
    assert result.groups["short_query"].pairs == 0
    assert result.groups["short_query"].recall == {"R@1": None}
    assert "| Short query | 0 | — |" in result.to_markdown()
    json_path, md_path = write_result(result, tmp_path / "out")
    restored = EvalResult.from_json(json.loads(json_path.read_text()))
    assert restored == result
    assert md_path.read_text() == result.to_markdown()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "metrics.md"]


def test_pairs_outside_the_pool_are_skipped_and_counted():
    pairs = resolve_pairs(["a", "b", "c"], ["a", "x", "b", "c"], ["b", "a", "y", "c"])
    assert pairs.queries.tolist() == [0]
    assert pairs.targets.tolist() == [1]
    assert pairs.skipped == 3


def test_no_rankable_pair_or_tiny_pool_is_an_input_error():
    scorer = DenseScorer(np.eye(3, dtype=np.float32), "cpu")
    with pytest.raises(InputError, match="no pair of split 'test'"):
        evaluate("eye", "test", scorer, resolve_pairs(["a", "b", "c"], ["x"], ["a"]), np.zeros(3), "given")
    with pytest.raises(InputError, match="at least 2"):
        evaluate("one", "test", DenseScorer(np.ones((1, 2), dtype=np.float32), "cpu"),
                 resolve_pairs(["a"], [], []), np.zeros(1), "given")


def test_recall_curve_and_plot(tmp_path):
    ranks = np.array([1, 2, 2, 10, 50])
    ks, recalls = recall_curve(ranks, 100)
    assert ks[0] == 1 and ks[-1] == 100
    assert recalls[0] == pytest.approx(0.2)
    assert recalls[list(ks).index(2)] == pytest.approx(0.6)
    assert recalls[-1] == 1.0
    assert np.all(np.diff(recalls) >= 0)
    path = plot_recall_curves({"all": ranks, "short_query": ranks[:2]}, 100, tmp_path / "plot.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
