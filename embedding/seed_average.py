"""Recall averaged over runs with different seeds (the paper averages seeds 42, 43 and 44).

Each run is an ``i2i eval --out`` directory; its ``ranks.parquet`` holds per-pair ranks and token
counts. Runs must rank the same pairs. A pair's hit at k is averaged over the runs, the recall is
the mean over pairs, and its 95% interval resamples pairs (``embedding.bootstrap``), so the
interval covers the pair sample with the seeds' variation folded into each pair.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq

from embedding.bootstrap import hits, interval, paired_difference
from embedding.evaluation import EvalConfig, pair_groups, recall_key
from i2i.core.errors import InputError


def load_runs(dirs: Sequence[Path]) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, np.ndarray, dict]:
    """(pairs, ranks (runs, pairs), query tokens, target tokens, first run's metrics.json)."""
    pairs, ranks, tokens = None, [], None
    for directory in dirs:
        table = pq.read_table(Path(directory) / "ranks.parquet")
        these = list(zip(table.column("query_note_id").to_pylist(), table.column("target_note_id").to_pylist()))
        order = np.argsort(np.array([f"{q}\x1f{t}" for q, t in these]), kind="stable")
        these = [these[i] for i in order]
        if pairs is None:
            pairs = these
            tokens = (table.column("query_tokens").to_numpy()[order], table.column("target_tokens").to_numpy()[order])
        elif these != pairs:
            raise InputError(f"{directory} ranks other pairs than {dirs[0]}: runs cannot be averaged")
        ranks.append(table.column("rank").to_numpy()[order])
    metrics = json.loads((Path(dirs[0]) / "metrics.json").read_text())
    return pairs, np.stack(ranks), tokens[0], tokens[1], metrics


def averaged_metrics(dirs: Sequence[Path], bootstrap: int = 1000, seed: int = 0) -> dict:
    """A metrics.json-shaped dict of the runs averaged per pair, with ``runs`` and per-run recalls."""
    pairs, ranks, query_tokens, target_tokens, first = load_runs(dirs)
    config = EvalConfig(ks=tuple(first["ks"]), short_tokens=first["short_tokens"], long_tokens=first["long_tokens"])
    candidates = first["pool_size"] - 1
    groups = {}
    for name, mask in pair_groups(query_tokens, target_tokens, config).items():
        recall, intervals = {}, {}
        for k in config.ks:
            found = interval(hits(ranks[:, mask], min(k, candidates)), bootstrap, seed) if mask.any() else None
            recall[recall_key(k)] = found.value if found else None
            if found:
                intervals[recall_key(k)] = [found.low, found.high]
        groups[name] = {"pairs": int(mask.sum()), "recall": recall, "interval": intervals}
    per_run = [json.loads((Path(d) / "metrics.json").read_text())["groups"]["all"]["recall"] for d in dirs]
    return {**first, "groups": groups, "runs": len(dirs), "per_run_all": per_run}


def paired_seed_difference(dirs_a: Sequence[Path], dirs_b: Sequence[Path], groups: Sequence[str], ks: Sequence[int],
                           bootstrap: int = 1000, seed: int = 0) -> dict:
    """Seed-averaged recall of a minus b on the pairs both rank, per group (a's token groups) and k."""
    pairs_a, ranks_a, qa, ta, first = load_runs(dirs_a)
    pairs_b, ranks_b, _, _, _ = load_runs(dirs_b)
    index_b = {pair: i for i, pair in enumerate(pairs_b)}
    shared = np.array([pair in index_b for pair in pairs_a])
    order_b = np.array([index_b[p] for p, s in zip(pairs_a, shared) if s], dtype=np.int64)
    config = EvalConfig(ks=tuple(ks), short_tokens=first["short_tokens"], long_tokens=first["long_tokens"])
    candidates = first["pool_size"] - 1
    masks = pair_groups(qa[shared], ta[shared], config)
    out = {"pairs_compared": int(shared.sum()), "groups": {}}
    for name in groups:
        mask = masks[name]
        out["groups"][name] = {}
        for k in ks:
            at = min(k, candidates)
            diff = paired_difference(hits(ranks_a[:, shared][:, mask], at), hits(ranks_b[:, order_b][:, mask], at),
                                     bootstrap, seed)
            out["groups"][name][recall_key(k)] = diff.to_json() if diff else None
    return out
