"""A replay against a server that is already running (the demo's): no rebuilding, only the
recall requests, the in-process channels, the scores and the report."""
from __future__ import annotations

import time
from pathlib import Path

from i2i.app.replay.channels import ServerChannel, cooccur_related, local_channels
from i2i.app.replay.report import ReportConfig, write_report
from i2i.app.replay.results import ChannelResult, ReplayResult
from i2i.app.replay.scoring import KS
from i2i.app.replay.split import DaySplit, user_cases


def replay_running_server(split: DaySplit, server, name: str, cooccur_scores: Path, out: Path, report: Path,
                          history: int = 20, top_t: int = 100, seed: int = 0) -> tuple[ReplayResult, Path]:
    """Scores ``server`` (serving day D's index) and the local channels on day D; writes table and report."""
    started = time.perf_counter()
    cases, counts = user_cases(split, history)
    k = max(KS)
    results = []
    related = cooccur_related(cooccur_scores, top_t)
    channels = [ServerChannel(name, server),
                *local_channels(split.catalogue(), split.events_before, related, seed=seed)]
    for channel in channels:
        begun = time.perf_counter()
        recalls = channel.recall(cases, k)
        notes = {"failed_requests": channel.failed} if isinstance(channel, ServerChannel) else {}
        results.append(ChannelResult(channel.name, channel.kind, recalls, time.perf_counter() - begun, notes))
    summary = {"day": split.day.isoformat(), "history_length": history, "notes_before": split.notes_before.num_rows,
               "new_notes": split.new_notes.num_rows, "deleted": len(split.deleted),
               "events_before": split.events_before.num_rows, "day_events": split.day_events.num_rows,
               "users": vars(counts), "cooccur_top_t": top_t, "k_requested": k,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    result = ReplayResult(summary, cases, results, name, seed=seed)
    result.write(out)
    return result, write_report(result, split, report, ReportConfig(seed=seed))
