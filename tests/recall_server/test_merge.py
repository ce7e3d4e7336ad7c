"""Merge strategies against straightforward per-note reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from recall_server.merge import merge, recency_weights


def reference(keys, scores, valid, strategy, limit, weights):
    """Dictionary-based merges, written for clarity rather than speed."""
    rows, width = keys.shape
    if strategy == "round_robin":
        taken, out, cursor = set(), [], [0] * rows
        while len(out) < limit and any(cursor[r] < width for r in range(rows)):
            for r in range(rows):
                while cursor[r] < width and (not valid[r, cursor[r]] or keys[r, cursor[r]] in taken):
                    cursor[r] += 1
                if cursor[r] < width:
                    key = keys[r, cursor[r]]
                    taken.add(key)
                    out.append((key, scores[r, cursor[r]] * weights[r], r))
                    cursor[r] += 1
                    if len(out) == limit:
                        break
        return out
    best: dict = {}
    total: dict = {}
    for r in range(rows):
        for c in range(width):
            if not valid[r, c]:
                continue
            key, score = keys[r, c], float(np.float32(scores[r, c]) * np.float32(weights[r]))
            if key not in best or score > best[key][0]:
                best[key] = (score, r)
            total[key] = total.get(key, 0.0) + score
    value = {key: (best[key][0] if strategy == "max" else total[key]) for key in best}
    ranked = sorted(value, key=lambda key: -value[key])[:limit]
    return [(key, value[key], best[key][1]) for key in ranked]


def lists(seed: int, rows: int, width: int, universe: int):
    rng = np.random.default_rng(seed)
    keys = np.stack([rng.choice(universe, size=width, replace=False) for _ in range(rows)]).astype(np.int64)
    scores = -np.sort(-rng.random((rows, width)).astype(np.float32), axis=1)
    valid = np.ones_like(keys, dtype=bool)
    valid[:, width - rng.integers(0, width // 2 + 1):] = False  # short lists are padded
    return keys, scores, valid


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), width=st.integers(1, 12),
       strategy=st.sampled_from(["max", "sum", "round_robin"]), limit=st.integers(1, 40),
       weighted=st.booleans())
def test_merge_matches_reference(seed, rows, width, strategy, limit, weighted):
    keys, scores, valid = lists(seed, rows, width, universe=20)
    weights = recency_weights(range(rows), 2.0 if weighted else None)
    merged = merge(keys, scores, valid, strategy, limit, weights)
    expected = reference(keys, scores, valid, strategy, limit, weights)
    assert len(merged) == len(expected)
    assert len(set(merged.keys.tolist())) == len(merged), "duplicates survived the merge"
    got_scores = merged.scores.astype(np.float64)
    np.testing.assert_allclose(got_scores, [score for _, score, _ in expected], rtol=1e-5, atol=1e-6)
    if strategy == "round_robin":
        assert merged.keys.tolist() == [key for key, _, _ in expected]
        assert merged.sources.tolist() == [row for _, _, row in expected]
    else:
        # Equal scores may come in either order; each key's score and source must match the reference.
        by_key = {key: (score, row) for key, score, row in reference(keys, scores, valid, strategy, 10**6, weights)}
        for key, score, row in zip(merged.keys.tolist(), got_scores.tolist(), merged.sources.tolist()):
            assert score == pytest.approx(by_key[key][0], rel=1e-5, abs=1e-6)
            if strategy == "max":
                assert scores[row][keys[row] == key][0] * weights[row] == pytest.approx(score, rel=1e-5)
            else:  # sum: the source is a row with the largest share of the note's total
                shares = [float(scores[r][(keys[r] == key) & valid[r]][0] * weights[r])
                          for r in range(rows) if ((keys[r] == key) & valid[r]).any()]
                assert scores[row][keys[row] == key][0] * weights[row] == pytest.approx(max(shares), rel=1e-6)


def test_round_robin_takes_one_per_source_in_turn():
    keys = np.array([["a", "b", "c"], ["a", "d", "e"]], dtype=object)
    scores = np.array([[0.9, 0.8, 0.7], [0.95, 0.6, 0.5]], dtype=np.float32)
    merged = merge(keys, scores, np.ones(keys.shape, bool), "round_robin", 4)
    # Row 1's best note is already taken by row 0, so on its turn it gives its next one.
    assert merged.keys.tolist() == ["a", "d", "b", "e"]
    assert merged.sources.tolist() == [0, 1, 0, 1]


def test_sum_rewards_notes_recalled_by_several_history_notes():
    keys = np.array([["x", "y"], ["x", "z"]], dtype=object)
    scores = np.array([[0.5, 0.9], [0.5, 0.1]], dtype=np.float32)
    valid = np.ones(keys.shape, bool)
    assert merge(keys, scores, valid, "max", 1).keys.tolist() == ["y"]
    assert merge(keys, scores, valid, "sum", 1).keys.tolist() == ["x"]


def test_sum_source_is_the_row_with_the_largest_share():
    keys = np.array([["x", "y", "w"], ["z", "x", "w"], ["x", "v", "w"]], dtype=object)
    scores = np.array([[0.9, 0.8, 0.1], [0.95, 0.6, 0.5], [0.7, 0.2, 0.05]], dtype=np.float32)
    valid = np.ones(keys.shape, bool)
    merged = merge(keys, scores, valid, "sum", 5)
    source = dict(zip(merged.keys.tolist(), merged.sources.tolist()))
    assert merged.keys.tolist()[0] == "x" and merged.scores[0] == pytest.approx(0.9 + 0.6 + 0.7)
    assert source == {"x": 0, "y": 0, "z": 1, "w": 1, "v": 2}
    # Row 0 at half weight: x's shares are 0.45, 0.6 and 0.7, so its source moves to row 2.
    weighted = merge(keys, scores, valid, "sum", 5, weights=np.array([0.5, 1.0, 1.0], np.float32))
    assert dict(zip(weighted.keys.tolist(), weighted.sources.tolist()))["x"] == 2


def test_recency_weights_halve_every_half_life():
    np.testing.assert_allclose(recency_weights([0, 2, 4], 2.0), [1.0, 0.5, 0.25])
    assert recency_weights([0, 5], None).tolist() == [1.0, 1.0]


def test_recency_weighting_prefers_recent_sources():
    keys = np.array([["new"], ["old"]], dtype=object)  # row 0 = the most recent history note
    scores = np.array([[0.8], [0.9]], dtype=np.float32)
    valid = np.ones(keys.shape, bool)
    assert merge(keys, scores, valid, "max", 1).keys.tolist() == ["old"]
    weights = recency_weights([0, 1], 0.5)  # the older row counts a quarter
    assert merge(keys, scores, valid, "max", 1, weights).keys.tolist() == ["new"]


def test_empty_and_invalid_input():
    keys = np.array([[1, 2]], dtype=np.int64)
    scores = np.array([[0.5, 0.4]], dtype=np.float32)
    assert len(merge(keys, scores, np.zeros(keys.shape, bool), "max", 5)) == 0
    assert len(merge(keys, scores, np.ones(keys.shape, bool), "max", 0)) == 0
    with pytest.raises(ValueError, match="unknown merge strategy"):
        merge(keys, scores, np.ones(keys.shape, bool), "avg", 5)
    with pytest.raises(ValueError, match="2-D shape"):
        merge(keys[0], scores[0], np.ones(2, bool), "max", 5)


def test_max_fast_path_equals_the_full_merge(monkeypatch):
    """Sorting only the best entries of ``max`` must give what sorting every entry gives."""
    from recall_server import merge as merge_module

    rng = np.random.default_rng(11)
    used = 0
    for trial in range(200):
        rows, width = int(rng.integers(1, 60)), int(rng.integers(1, 80))
        keys = rng.integers(0, int(rng.integers(5, 3000)), (rows, width)).astype(np.int64)
        scores = -np.sort(-rng.random((rows, width)).astype(np.float32), axis=1)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties
        valid = rng.random((rows, width)) > 0.1
        limit = int(rng.integers(1, 100))
        fast = merge_module.merge(keys, scores, valid, "max", limit)
        used += merge_module.BEST_ENTRIES * limit < valid.sum()
        with monkeypatch.context() as patch:
            patch.setattr(merge_module, "BEST_ENTRIES", 10**9)  # every entry sorted
            full = merge_module.merge(keys, scores, valid, "max", limit)
        np.testing.assert_array_equal(fast.keys, full.keys)
        np.testing.assert_array_equal(fast.scores, full.scores)
        np.testing.assert_array_equal(fast.sources, full.sources)
    assert used > 50  # the shortcut was taken, not only the fallback
