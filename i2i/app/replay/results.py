"""Scores every channel's recalled lists and writes the replay table (markdown and JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from i2i.app.replay.scoring import (
    GROUPS,
    KS,
    Estimate,
    UserCase,
    bootstrap_draws,
    estimate,
    paired_difference,
    per_user,
)
from i2i.core.io import atomic_file, atomic_write_text

GROUP_TITLES = {"all": "all clicks", "new": "clicks on notes published on day D (new)",
                "old": "clicks on notes published before day D (old)"}


@dataclass
class ChannelResult:
    name: str
    kind: str
    recalls: dict[str, list[str]]
    seconds: float
    notes: dict = field(default_factory=dict)  # failures, versions, missing history


@dataclass
class ReplayResult:
    summary: dict
    cases: list[UserCase]
    channels: list[ChannelResult]
    reference: str | None  # the channel differences are taken against (the trained model)
    reps: int = 1000
    seed: int = 0
    outputs: list[Path] = field(default_factory=list)  # what ``run`` wrote

    def __post_init__(self) -> None:
        draws = bootstrap_draws(len(self.cases), self.reps, self.seed)
        self.values = {c.name: {g: per_user(self.cases, c.recalls, g) for g in GROUPS} for c in self.channels}
        self.metrics = {name: {g: {m: estimate(v, draws) for m, v in groups[g].items()} for g in GROUPS}
                        for name, groups in self.values.items()}
        self.differences: dict[str, dict[str, dict[str, Estimate]]] = {}
        if self.reference in self.values:
            ref = self.values[self.reference]
            for name, groups in self.values.items():
                if name != self.reference and name != "oracle":
                    self.differences[name] = {g: {f"recall@{k}": paired_difference(
                        ref[g][f"recall@{k}"], groups[g][f"recall@{k}"], draws) for k in KS} for g in GROUPS}

    def users_in(self, group: str) -> int:
        return sum(1 for case in self.cases if case.group_targets(group))

    def to_json(self) -> dict:
        def est(e: Estimate) -> dict:
            return asdict(e)

        return {
            "summary": self.summary,
            "bootstrap": {"reps": self.reps, "seed": self.seed, "level": 0.95, "over": "users"},
            "users": {g: self.users_in(g) for g in GROUPS},
            "channels": [{"name": c.name, "kind": c.kind, "seconds": round(c.seconds, 2), **c.notes,
                          "metrics": {g: {m: est(e) for m, e in self.metrics[c.name][g].items()} for g in GROUPS}}
                         for c in self.channels],
            "reference": self.reference,
            "differences_vs_reference": {name: {g: {m: est(e) for m, e in ms.items()} for g, ms in groups.items()}
                                         for name, groups in self.differences.items()},
        }

    def to_markdown(self) -> str:
        lines = []
        for group in GROUPS:
            lines += [f"**{GROUP_TITLES[group]}** — {self.users_in(group)} users", "",
                      "| channel | kind | " + " | ".join(f"HR@{k}" for k in KS) + " | "
                      + " | ".join(f"R@{k}" for k in KS) + " |",
                      "|---|---|" + "---|" * (2 * len(KS))]
            for channel in self.channels:
                m = self.metrics[channel.name][group]
                cells = [m[f"hit@{k}"].format() for k in KS] + [m[f"recall@{k}"].format() for k in KS]
                lines.append(f"| {channel.name} | {channel.kind} | " + " | ".join(cells) + " |")
            lines.append("")
        if self.differences:
            lines += [f"**{self.reference} minus each channel** (Recall@k, paired over the same users; an interval "
                      "above 0 means the reference is ahead)", "",
                      "| channel | " + " | ".join(f"{g} R@{k}" for g in ("new", "old") for k in KS) + " |",
                      "|---|" + "---|" * (2 * len(KS))]
            for name, groups in self.differences.items():
                cells = [groups[g][f"recall@{k}"].format() for g in ("new", "old") for k in KS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        lines.append("Means over users with a 95% bootstrap interval over users "
                     f"({self.reps} draws, seed {self.seed}). HR = hit rate, R = recall.")
        return "\n".join(lines) + "\n"

    def write_recalls(self, path: Path) -> Path:
        with atomic_file(path) as tmp:
            pq.write_table(recalls_table(self.channels), tmp)
        return path

    def write(self, out: Path, json_path: Path | None = None) -> list[Path]:
        data = json.dumps(self.to_json(), indent=2, default=str) + "\n"
        paths = [atomic_write_text(out / "replay.md", self.to_markdown()), atomic_write_text(out / "replay.json", data),
                 self.write_recalls(out / "recalls.parquet")]
        if json_path is not None:
            paths.append(atomic_write_text(json_path, data))
        return paths


def recalls_table(channels: Sequence[ChannelResult]) -> pa.Table:
    """One row per (channel, user, rank): what every channel recalled, for inspection and re-scoring."""
    rows: dict[str, list] = {"channel": [], "user_id": [], "rank": [], "note_id": []}
    for channel in channels:
        for user, notes in channel.recalls.items():
            rows["channel"] += [channel.name] * len(notes)
            rows["user_id"] += [user] * len(notes)
            rows["rank"] += list(range(1, len(notes) + 1))
            rows["note_id"] += list(notes)
    return pa.table({"channel": pa.array(rows["channel"], pa.string()), "user_id": pa.array(rows["user_id"], pa.string()),
                     "rank": pa.array(rows["rank"], pa.int32()), "note_id": pa.array(rows["note_id"], pa.string())})


def curves(cases: Sequence[UserCase], recalls: Mapping[str, Sequence[str]], group: str, max_k: int) -> np.ndarray:
    """Mean Recall@k over the users with targets in ``group``, k = 1..max_k."""
    from i2i.app.replay.scoring import recall_curve

    rows = [recall_curve(recalls.get(c.user_id, []), c.group_targets(group), max_k)
            for c in cases if c.group_targets(group)]
    return np.mean(rows, axis=0) if rows else np.zeros(max_k)
