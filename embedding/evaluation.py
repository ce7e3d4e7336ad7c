"""Recall evaluation of note representations (paper section 2.3 and appendix C).

For each pair, the query note's scores against the whole note pool are computed exactly (no ANN),
the query itself is excluded, and the rank of the target note decides Recall@k. Scores come from a
``Scorer``: embeddings use one matrix product per chunk of queries (on the GPU when there is one),
BM25 supplies its own rows. Pairs are grouped as in the paper: all, short-query, short-target
(fewer than ``short_tokens`` tokens) and long-query, long-target (more than ``long_tokens``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from embedding.bootstrap import hits, interval
from i2i.core.device import pick_device
from i2i.core.errors import InputError
from i2i.core.io import atomic_file, atomic_write_text

DEFAULT_KS = (100, 1000, 10000)
GROUPS = ("all", "short_query", "short_target", "long_query", "long_target")
GROUP_TITLES = {
    "all": "All pairs",
    "short_query": "Short query",
    "short_target": "Short target",
    "long_query": "Long query",
    "long_target": "Long target",
}


@dataclass
class EvalConfig:
    """How pairs are ranked and grouped."""

    ks: tuple[int, ...] = DEFAULT_KS
    short_tokens: int = 50  # a note is short below this many tokens (paper: 50)
    long_tokens: int = 165  # a note is long above this many tokens (paper appendix: 165)
    max_scores_per_chunk: int = 1 << 25  # bounds memory: queries per chunk = this // pool size
    device: str | None = None  # None: cuda when available, else cpu
    progress: bool = False
    bootstrap: int = 1000  # resamples of pairs for the 95% intervals (0: no intervals)
    seed: int = 0  # of the bootstrap resampling


def format_k(k: int) -> str:
    return f"{k // 1000}k" if k >= 1000 and k % 1000 == 0 else str(k)


class Scorer(Protocol):
    """Similarity of query notes against every note of the pool (higher is more similar)."""

    pool_size: int

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        """Scores (len(query_positions), pool_size) of the given pool positions as queries."""


class DenseScorer:
    """Inner products of embedding rows; L2-normalised rows make it cosine similarity."""

    def __init__(self, vectors: np.ndarray, device: str | None = None) -> None:
        if vectors.ndim != 2:
            raise InputError(f"embeddings must be a 2-d array, got shape {vectors.shape}")
        self.device = pick_device(device)
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)
        self.pool_size = self.vectors.shape[0]

    def score_rows(self, query_positions: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(np.asarray(query_positions, dtype=np.int64)).to(self.device)
        return self.vectors.index_select(0, index) @ self.vectors.T


def target_ranks(
    scorer: Scorer,
    query_positions: np.ndarray,
    target_positions: np.ndarray,
    config: EvalConfig | None = None,
) -> np.ndarray:
    """1-based rank of each target among the pool without its query note.

    A note tied with the target counts as ranked before it (the conservative reading, which keeps
    a scorer that gives everything the same score from looking good).
    """
    config = config or EvalConfig()
    query_positions = np.asarray(query_positions, dtype=np.int64)
    target_positions = np.asarray(target_positions, dtype=np.int64)
    if query_positions.shape != target_positions.shape:
        raise InputError("query and target positions differ in length")
    if np.any(query_positions == target_positions):
        raise InputError("a pair has the same note as query and target")
    ranks = np.empty(len(query_positions), dtype=np.int64)
    chunk = max(1, min(4096, config.max_scores_per_chunk // max(1, scorer.pool_size)))
    starts = range(0, len(query_positions), chunk)
    for start in tqdm(starts, desc="ranking", unit="chunk", disable=not config.progress):
        queries = query_positions[start:start + chunk]
        targets = target_positions[start:start + chunk]
        scores = torch.nan_to_num(scorer.score_rows(queries).float(), nan=float("-inf"))
        rows = torch.arange(len(queries), device=scores.device)
        target_scores = scores[rows, torch.from_numpy(targets).to(scores.device)]
        at_or_above = (scores >= target_scores[:, None]).sum(dim=1)
        self_counted = scores[rows, torch.from_numpy(queries).to(scores.device)] >= target_scores
        # at_or_above includes the target itself: rank = others at or above + 1
        ranks[start:start + chunk] = (at_or_above - self_counted.long()).cpu().numpy()
    return ranks


def recall_at(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks <= k)) if len(ranks) else float("nan")


@dataclass
class GroupResult:
    pairs: int
    recall: dict[str, float | None]  # "R@100" -> value; None when the group has no pairs
    interval: dict[str, list[float] | None] = field(default_factory=dict)  # "R@100" -> [low, high] (95%)


@dataclass
class EvalResult:
    """Recall of one method on one split, JSON- and markdown-ready."""

    method: str
    split: str
    pool_size: int  # notes ranked per query, including the query itself
    pairs: int
    skipped_pairs: int  # pairs whose query or target is not in the pool
    ks: list[int]
    capped_ks: list[int]  # ks at or above the number of candidates: recall measured at pool_size - 1
    groups: dict[str, GroupResult]
    short_tokens: int
    long_tokens: int
    token_counter: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def candidates(self) -> int:
        return self.pool_size - 1

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EvalResult":
        data = dict(data)
        data["groups"] = {name: GroupResult(**group) for name, group in data["groups"].items()}
        return cls(**data)

    def to_markdown(self) -> str:
        headers = ["pairs", "count"] + [recall_label(k, k in self.capped_ks) for k in self.ks]
        lines = [
            f"### {self.method} — split {self.split}",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
        ]
        for name in GROUPS:
            group = self.groups[name]
            cells = [GROUP_TITLES[name], str(group.pairs)]
            cells += [format_recall(group.recall[recall_key(k)], group.interval.get(recall_key(k))) for k in self.ks]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Pool: {self.pool_size} notes ({self.candidates} candidates per query, the query excluded); "
            f"{self.pairs} pairs evaluated, {self.skipped_pairs} skipped (note not in the pool). "
            f"Short < {self.short_tokens} tokens, long > {self.long_tokens} tokens ({self.token_counter})."
        )
        if any(group.interval for group in self.groups.values()):
            lines.append("In brackets: 95% bootstrap interval over pairs.")
        if self.capped_ks:
            capped = ", ".join(f"R@{format_k(k)}" for k in self.capped_ks)
            lines.append(f"\\* {capped} capped at the pool size: measured at k = {self.candidates}, so it is 1.0 by construction.")
        return "\n".join(lines) + "\n"


def recall_key(k: int) -> str:
    return f"R@{format_k(k)}"


def recall_label(k: int, capped: bool) -> str:
    return recall_key(k) + ("*" if capped else "")


def format_recall(value: float | None, interval: list[float] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def pair_groups(query_tokens: np.ndarray, target_tokens: np.ndarray, config: EvalConfig) -> dict[str, np.ndarray]:
    """Boolean masks over pairs for each group of the paper."""
    return {
        "all": np.ones(len(query_tokens), dtype=bool),
        "short_query": query_tokens < config.short_tokens,
        "short_target": target_tokens < config.short_tokens,
        "long_query": query_tokens > config.long_tokens,
        "long_target": target_tokens > config.long_tokens,
    }


def summarise(
    ranks: np.ndarray,
    query_tokens: np.ndarray,
    target_tokens: np.ndarray,
    pool_size: int,
    config: EvalConfig,
) -> tuple[dict[str, GroupResult], list[int]]:
    """Recall@k per group; a k at or above the candidate count is measured at the candidate count."""
    candidates = pool_size - 1
    capped = [k for k in config.ks if k >= candidates]
    groups = {}
    for name, mask in pair_groups(np.asarray(query_tokens), np.asarray(target_tokens), config).items():
        selected = ranks[mask]
        recall = {recall_key(k): (recall_at(selected, min(k, candidates)) if len(selected) else None) for k in config.ks}
        intervals = {}
        if config.bootstrap and len(selected):
            for k in config.ks:
                found = interval(hits(selected, min(k, candidates)), config.bootstrap, config.seed)
                intervals[recall_key(k)] = [round(found.low, 6), round(found.high, 6)]
        groups[name] = GroupResult(pairs=int(mask.sum()), recall=recall, interval=intervals)
    return groups, capped


@dataclass
class PairPositions:
    """Pairs resolved to pool positions; pairs naming notes outside the pool are counted, not ranked."""

    queries: np.ndarray
    targets: np.ndarray
    skipped: int


def resolve_pairs(pool_ids: Sequence[str], query_ids: Sequence[str], target_ids: Sequence[str]) -> PairPositions:
    position = {note_id: i for i, note_id in enumerate(pool_ids)}
    queries, targets, skipped = [], [], 0
    for query, target in zip(query_ids, target_ids):
        q, t = position.get(query), position.get(target)
        if q is None or t is None or q == t:
            skipped += 1
            continue
        queries.append(q)
        targets.append(t)
    return PairPositions(np.array(queries, dtype=np.int64), np.array(targets, dtype=np.int64), skipped)


def evaluate(
    method: str,
    split: str,
    scorer: Scorer,
    pairs: PairPositions,
    pool_tokens: np.ndarray,
    token_counter: str,
    config: EvalConfig | None = None,
) -> tuple[EvalResult, np.ndarray]:
    """Ranks every pair and returns the grouped recalls with the raw ranks (for curves)."""
    config = config or EvalConfig()
    if scorer.pool_size < 2:
        raise InputError(f"the note pool has {scorer.pool_size} note(s); at least 2 are needed to rank")
    if len(pairs.queries) == 0:
        raise InputError(f"no pair of split {split!r} has both notes in the pool ({pairs.skipped} skipped)")
    started = time.perf_counter()
    ranks = target_ranks(scorer, pairs.queries, pairs.targets, config)
    groups, capped = summarise(ranks, pool_tokens[pairs.queries], pool_tokens[pairs.targets], scorer.pool_size, config)
    result = EvalResult(
        method=method,
        split=split,
        pool_size=scorer.pool_size,
        pairs=len(ranks),
        skipped_pairs=pairs.skipped,
        ks=list(config.ks),
        capped_ks=capped,
        groups=groups,
        short_tokens=config.short_tokens,
        long_tokens=config.long_tokens,
        token_counter=token_counter,
        seconds=time.perf_counter() - started,
    )
    return result, ranks


def recall_curve(ranks: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall at every k from 1 to max_k (log-spaced points)."""
    ks = np.unique(np.geomspace(1, max(1, max_k), num=min(200, max(2, max_k))).astype(np.int64))
    sorted_ranks = np.sort(ranks)
    recalls = np.searchsorted(sorted_ranks, ks, side="right") / max(1, len(ranks))
    return ks, recalls


def plot_recall_curves(curves: dict[str, np.ndarray], max_k: int, path: str | os.PathLike, title: str) -> Path:
    """Writes a PNG of recall against k (log scale) for each named set of ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, ranks in curves.items():
        if len(ranks):
            ks, recalls = recall_curve(ranks, max_k)
            axes.plot(ks, recalls, label=f"{name} ({len(ranks)})")
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("Recall@k")
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=120)
    plt.close(figure)
    return path


def write_result(result: EvalResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``metrics.json`` and ``metrics.md`` in out_dir."""
    out_dir = Path(out_dir)
    json_path = atomic_write_text(out_dir / "metrics.json", json.dumps(result.to_json(), indent=2) + "\n")
    md_path = atomic_write_text(out_dir / "metrics.md", result.to_markdown())
    return json_path, md_path
