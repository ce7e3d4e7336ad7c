"""The replay's one entry point, ``run(ReplayConfig) -> ReplayResult``: the stages in order.

1. the time split at day D (bad input stops here, before anything is written);
2. day D-1's system: co-occurrence, pairs, training (or ``checkpoint``), the untrained checkpoint;
3. per embedding channel: its table and index as of D-1, then day D's offline phase, then every
   user's recall through a real recall server;
4. the local channels (co-occurrence, popularity, random, oracle), the scores, the table and
   the report.

Every stage's output is written atomically and skipped on a rerun when present, so an interrupted
replay resumes where it stopped; the wall time of each stage goes into the summary.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from i2i.app.replay.build import (
    DayBefore,
    recipe,
    run_cooccur,
    run_pairs,
    run_train,
    split_identity,
    untrained_checkpoint,
    write_split,
)
from i2i.app.replay.config import EMBEDDING_CHANNELS, REFERENCE, TITLES, ReplayConfig
from i2i.app.replay.results import ChannelResult, ReplayResult
from i2i.app.replay.scoring import KS
from i2i.app.replay.split import DaySplit, load_split, user_cases
from i2i.core.errors import InputError, TemporaryError
from i2i.core.locks import LockHeld, exclusive_lock


def say(message: str) -> None:
    print(message, flush=True)


class Clock:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        say(f"== {name}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 2)


def has_images(notes) -> bool:
    return "image" in notes.column_names and notes.column("image").null_count < notes.num_rows


def run(config: ReplayConfig) -> ReplayResult:
    """Replays ``config.day``; writes the table (and the report) under ``config.out``; returns the result."""
    started = time.perf_counter()
    clock = Clock()
    config.check()
    with clock.stage("split"):
        split = load_split(config.data, config.day, config.deletes, config.delete_random, config.seed, config.span)
        cases, counts = user_cases(split, config.history)
    if not cases:
        raise InputError(f"no user clicked on {config.day} with a click history before it: nothing to replay")
    say(f"replay of {config.day}: {split.notes_before.num_rows} notes before, {split.new_notes.num_rows} new, "
        f"{len(split.deleted)} deleted; {counts.scored} users scored of {counts.active_users} active")
    channels = list(config.channels)
    if "image" in channels and not has_images(split.notes_before):
        say("image: the dataset has no images; channel left out")
        channels.remove("image")
    try:
        with exclusive_lock(config.out / ".lock", wait=False, note=f"{os.getpid()}\n"):
            results, trained = replay_channels(config, split, cases, channels, clock)
    except LockHeld as exc:
        raise TemporaryError(f"another replay writes into {config.out} (pid {exc.holder or '?'}); retry later") from None

    summary = {
        "data": str(config.data), "day": config.day.isoformat(), "span_days": config.span,
        "history_length": config.history, "notes_before": split.notes_before.num_rows,
        "new_notes": split.new_notes.num_rows, "deleted": len(split.deleted),
        "events_before": split.events_before.num_rows, "day_events": split.day_events.num_rows,
        "users": asdict(counts), "trained_checkpoint": str(trained) if trained else None,
        "train_job": recipe(config.train_job("", "", "")) if config.needs_training() else None,
        "cooccur_top_t": config.cooccur_top_t, "k_requested": max(KS),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    if config.command:
        summary["command"] = config.command
    reference = REFERENCE if "trained" in channels else None
    with clock.stage("scores"):
        result = ReplayResult(summary, cases, results, reference, config.bootstrap, config.seed)
    summary["stage_seconds"] = clock.seconds  # the writing below is not counted
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    result.outputs = result.write(config.out, config.json_path)
    if config.report is not None:
        from i2i.app.replay.report import ReportConfig, write_report

        result.outputs.append(write_report(result, split, config.report,
                                           ReportConfig(users=config.report_users, seed=config.seed)))
    return result


def replay_channels(config: ReplayConfig, split: DaySplit, cases, channels: list[str],
                    clock: Clock) -> tuple[list[ChannelResult], Path | None]:
    """Builds day D-1 and day D, then recalls every channel; returns the results and the trained checkpoint."""
    from i2i.app.replay.embedded import ChannelIndex, CheckpointEmbedder, image_embedder, minilm_embedder
    from i2i.app.replay.served import serve_channel

    paths = DayBefore(config.out / "work")
    made_from = split_identity(split, config)
    trained: Path | None = config.checkpoint
    if set(channels) & {*EMBEDDING_CHANNELS, "cooccur"}:  # the stages read these tables
        with clock.stage("write split"):
            write_split(split, paths, made_from)
    if ("trained" in channels and trained is None) or "cooccur" in channels:
        with clock.stage("cooccur"):
            run_cooccur(paths, config, say)
    if "trained" in channels and trained is None:
        with clock.stage("pairs"):
            run_pairs(paths, config, say)
        with clock.stage("train"):
            trained = run_train(paths, config, say)
    deletes = paths.deletes if split.deleted else None
    k = max(KS)
    results: list[ChannelResult] = []
    vision_cache = paths.root / "vision_cache"  # the trained and untrained model share one frozen encoder
    for name in [c for c in EMBEDDING_CHANNELS if c in channels]:
        if name == "trained":
            embedder = CheckpointEmbedder(TITLES[name], trained, config.device, vision_cache)
        elif name == "untrained":
            with clock.stage("untrained checkpoint"):
                embedder = CheckpointEmbedder(TITLES[name], untrained_checkpoint(paths, config, say), config.device,
                                              vision_cache)
        elif name == "minilm":
            embedder = minilm_embedder(config.device)
        else:
            embedder = image_embedder(config.device)
        index = ChannelIndex(config.out / "channels" / name)
        with clock.stage(f"{name}: embed and index"):
            index.prepare(embedder, paths.notes_before, paths.new_notes, deletes, made_from, say)
        with clock.stage(f"{name}: recall through the server"):
            results.append(serve_channel(TITLES[name], index, cases, k, config.recall_workers, say))
    results += local_results(config, split, cases, channels, paths, clock)
    return results, trained


def local_results(config: ReplayConfig, split: DaySplit, cases, channels: list[str], paths: DayBefore,
                  clock: Clock) -> list[ChannelResult]:
    """The channels computed in this process: co-occurrence (SAR), popularity, random, oracle."""
    from i2i.app.replay.channels import cooccur_related, local_channels

    related = cooccur_related(paths.cooccur / "scores", config.cooccur_top_t) if "cooccur" in channels else None
    results = []
    for channel in local_channels(split.catalogue(), split.events_before, related, channels, config.popularity_days,
                                  config.seed):
        with clock.stage(f"{channel.name}: recall"):
            begun = time.perf_counter()
            recalls = channel.recall(cases, max(KS))
            results.append(ChannelResult(channel.name, channel.kind, recalls, time.perf_counter() - begun))
    return results
