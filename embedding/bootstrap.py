"""Bootstrap uncertainty of recall figures: percentile intervals, and paired differences of two methods.

Pairs are the resampled unit. A recall is the mean of per-pair hits (1 when the target ranks
within k; a fraction when hits are averaged over seeds), so one resampling of pair indices serves
every k and group. A paired difference resamples the same pairs for both methods, which removes
the variation the two share (the hard and easy pairs) and is what tells two methods apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CHUNK = 256  # resamples drawn at once: bounds memory at CHUNK x pairs indices


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile interval (``level`` = 0.95 for a 95% interval)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def to_json(self) -> dict:
        return asdict(self)


def resampled_means(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Means of ``values`` (n,) or of each row of ``values`` (m, n) over ``resamples`` resamplings of
    the n columns with replacement: shape (resamples,) or (m, resamples)."""
    values = np.asarray(values, dtype=np.float64)
    rows = values[None, :] if values.ndim == 1 else values
    n = rows.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((rows.shape[0], resamples))
    for start in range(0, resamples, CHUNK):
        count = min(CHUNK, resamples - start)
        index = rng.integers(0, n, size=(count, n))
        means[:, start:start + count] = rows[:, index].mean(axis=2)
    return means[0] if values.ndim == 1 else means


def interval(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
             level: float = 0.95) -> Interval | None:
    """Mean of per-pair ``values`` with its bootstrap percentile interval; None for no pairs."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return None
    means = resampled_means(values, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), level)


def hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-pair hits at k; ``ranks`` (n,) or (seeds, n) gives hits averaged over seeds."""
    ranks = np.asarray(ranks)
    return (ranks <= k).astype(np.float64) if ranks.ndim == 1 else (ranks <= k).mean(axis=0)


@dataclass(frozen=True)
class PairedDifference:
    """Recall of method a minus method b on the same pairs, with its bootstrap interval."""

    a: float
    b: float
    difference: Interval
    pairs: int
    p_value: float  # two-sided: twice the smaller share of resampled differences on either side of 0

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "difference": self.difference.to_json(), "pairs": self.pairs,
                "p_value": self.p_value}


def paired_difference(hits_a: np.ndarray, hits_b: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, level: float = 0.95) -> PairedDifference | None:
    """Paired bootstrap of mean(hits_a) - mean(hits_b); both arrays are over the same pairs in the same order."""
    hits_a, hits_b = np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)
    if hits_a.shape != hits_b.shape:
        raise ValueError(f"paired hits differ in shape: {hits_a.shape} vs {hits_b.shape}")
    if len(hits_a) == 0:
        return None
    delta = hits_a - hits_b
    means = resampled_means(delta, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    if np.all(delta == 0):
        p_value = 1.0
    else:
        p_value = float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
    return PairedDifference(float(hits_a.mean()), float(hits_b.mean()),
                            Interval(float(delta.mean()), float(low), float(high), level), len(delta), p_value)
