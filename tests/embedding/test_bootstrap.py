"""Bootstrap intervals and paired differences on hand-made rankings whose answers are known."""
import numpy as np
import pytest

from embedding.bootstrap import hits, interval, paired_difference, resampled_means
from embedding.evaluation import DenseScorer, EvalConfig, evaluate, resolve_pairs


def test_certain_recalls_have_zero_width_intervals():
    assert interval(hits(np.array([1, 5, 99, 100]), 100)) .low == 1.0
    found = interval(hits(np.array([101, 500, 1000]), 100))
    assert (found.value, found.low, found.high) == (0.0, 0.0, 0.0)
    assert interval(np.array([])) is None


def test_interval_of_half_hits_matches_the_binomial_standard_error():
    ranks = np.array([1, 1000] * 200)  # 400 pairs, half within 100
    found = interval(hits(ranks, 100), resamples=4000, seed=1)
    half_width = 1.96 * np.sqrt(0.25 / 400)  # 0.049
    assert found.value == 0.5
    assert found.low == pytest.approx(0.5 - half_width, abs=0.01)
    assert found.high == pytest.approx(0.5 + half_width, abs=0.01)
    # same seed, same interval; resampling is over pairs, so more pairs narrow it by sqrt(4)
    assert interval(hits(ranks, 100), resamples=4000, seed=1) == found
    wider = interval(hits(ranks[:100], 100), resamples=4000, seed=1)
    assert (wider.high - wider.low) == pytest.approx(2 * (found.high - found.low), rel=0.15)


def test_hits_average_over_seeds_per_pair():
    ranks = np.array([[1, 200, 50], [300, 200, 50], [1, 1, 500]])  # 3 seeds x 3 pairs
    assert np.allclose(hits(ranks, 100), [2 / 3, 1 / 3, 2 / 3])
    assert interval(hits(ranks, 100)).value == pytest.approx(5 / 9)


def test_resampled_means_of_a_constant_are_the_constant():
    assert np.all(resampled_means(np.full(50, 0.25), resamples=300) == 0.25)
    assert resampled_means(np.ones((2, 10)), resamples=7).shape == (2, 7)


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    a = hits(np.array([1, 200, 3, 4000, 99] * 40), 100)
    diff = paired_difference(a, a)
    assert diff.difference.value == diff.difference.low == diff.difference.high == 0.0
    assert diff.p_value == 1.0 and diff.pairs == 200


def test_paired_difference_finds_a_known_gain_that_unpaired_intervals_miss():
    rng = np.random.default_rng(3)
    b = (rng.random(400) < 0.5).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:20]] = 1.0  # a finds 20 targets more, on the same pairs: +0.05
    diff = paired_difference(a, b, resamples=4000, seed=2)
    assert diff.difference.value == pytest.approx(0.05)
    assert diff.a - diff.b == pytest.approx(0.05)
    # delta is 1 on 20 of 400 pairs: standard error sqrt(0.05 * 0.95 / 400) = 0.0109
    assert diff.difference.low == pytest.approx(0.05 - 1.96 * 0.0109, abs=0.008) and diff.difference.low > 0
    assert diff.p_value < 0.01
    # the two separate intervals overlap: only the paired comparison tells the methods apart
    ia, ib = interval(a, 4000, 2), interval(b, 4000, 2)
    assert ia.low < ib.high
    with pytest.raises(ValueError):
        paired_difference(a, b[:-1])


def test_evaluate_reports_intervals_per_group_and_k():
    vectors = np.eye(6, dtype=np.float32)
    vectors[1] = vectors[0]  # pair 0-1 is found at rank 1; pair 2-3 at the bottom
    pairs = resolve_pairs([str(i) for i in range(6)], ["0", "2"], ["1", "3"])
    result, ranks = evaluate("m", "test", DenseScorer(vectors, "cpu"), pairs, np.array([10, 10, 10, 10, 10, 10]),
                             "whitespace", EvalConfig(ks=(1, 100), bootstrap=500))
    assert list(ranks) == [1, 5]
    group = result.groups["all"]
    assert group.recall == {"R@1": 0.5, "R@100": 1.0}
    assert group.interval["R@1"] == [0.0, 1.0] and group.interval["R@100"] == [1.0, 1.0]
    assert "[0.000, 1.000]" in result.to_markdown()
    assert result.groups["long_query"].interval == {}
    none = evaluate("m", "test", DenseScorer(vectors, "cpu"), pairs, np.full(6, 10), "whitespace",
                    EvalConfig(ks=(1,), bootstrap=0))[0]
    assert none.groups["all"].interval == {}
