"""Per-user HitRate@k and Recall@k against next-day clicks, with bootstrap intervals over users.

A user's targets are the distinct notes they clicked on day D that are not in their history
(the server leaves history notes out, so a re-click cannot be recalled by any channel). Targets
split into notes published on day D ("new") and older ones ("old"); a user counts in a group only
when they have at least one target in it. Intervals resample users with replacement; every
channel is resampled with the same user draws, so differences between channels are paired.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

KS = (50, 100, 200)
GROUPS = ("all", "new", "old")
METRICS = ("hit", "recall")


@dataclass
class UserCase:
    """One user of day D: the history sent to the server and the clicks it is scored against."""

    user_id: str
    history: list[str]  # most recent first
    targets: set[str]
    new_targets: set[str] = field(default_factory=set)  # subset of targets published on day D

    def group_targets(self, group: str) -> set[str]:
        if group == "all":
            return self.targets
        if group == "new":
            return self.new_targets
        if group == "old":
            return self.targets - self.new_targets
        raise ValueError(f"unknown group {group!r}")


def hit_and_recall(recalled: Sequence[str], targets: set[str], k: int) -> tuple[float, float]:
    """HitRate@k (any target in the first k) and Recall@k (share of targets in the first k)."""
    if not targets:
        raise ValueError("a user without targets has no hit rate or recall")
    found = len(targets.intersection(recalled[:k]))
    return float(found > 0), found / len(targets)


def recall_curve(recalled: Sequence[str], targets: set[str], max_k: int) -> np.ndarray:
    """Recall@k for k = 1..max_k of one user (cumulative share of targets found)."""
    hits = np.array([note in targets for note in recalled[:max_k]], dtype=np.float64)
    hits = np.pad(hits, (0, max_k - len(hits)))
    return np.cumsum(hits) / len(targets)


def per_user(cases: Sequence[UserCase], recalls: Mapping[str, Sequence[str]], group: str,
             ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """``{"hit@k": values, "recall@k": values}`` over all cases; NaN where the user has no target in ``group``."""
    out = {f"{metric}@{k}": np.full(len(cases), np.nan) for metric in METRICS for k in ks}
    for row, case in enumerate(cases):
        targets = case.group_targets(group)
        if not targets:
            continue
        recalled = recalls.get(case.user_id, [])
        for k in ks:
            hit, recall = hit_and_recall(recalled, targets, k)
            out[f"hit@{k}"][row] = hit
            out[f"recall@{k}"][row] = recall
    return out


def bootstrap_draws(users: int, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """(reps, users) indices of users drawn with replacement; shared by every channel."""
    return np.random.default_rng(seed).integers(0, users, size=(reps, users))


@dataclass
class Estimate:
    mean: float
    low: float
    high: float
    users: int

    def format(self, digits: int = 3) -> str:
        if self.users == 0:
            return "–"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def estimate(values: np.ndarray, draws: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean over users with a value (not NaN) and its percentile bootstrap interval."""
    present = ~np.isnan(values)
    if not present.any():
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    filled = np.where(present, values, 0.0)
    sums = filled[draws].sum(axis=1)
    counts = present[draws].sum(axis=1)
    means = sums[counts > 0] / counts[counts > 0]
    tail = (1 - level) / 2
    return Estimate(float(values[present].mean()), float(np.quantile(means, tail)),
                    float(np.quantile(means, 1 - tail)), int(present.sum()))


def paired_difference(a: np.ndarray, b: np.ndarray, draws: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean of ``a - b`` over users who have both, with the interval from the same user draws."""
    return estimate(a - b, draws, level)
