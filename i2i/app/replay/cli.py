"""``i2i eval replay``: a time-split next-day replay of the online path (paper Figure 5).

Everything is built as of day D-1 with the project's own stages (co-occurrence, pairs, training
or a given checkpoint, embeddings, index); day D's offline phase embeds the new notes and runs
``i2i index update`` with the deletions; then every user who clicked on day D sends their click
history before D to a real recall server over gRPC, and the recalled lists are scored against
the day D clicks (HitRate@k, Recall@k; new vs older notes; bootstrap intervals over users).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import time
from dataclasses import asdict
from pathlib import Path

from i2i.app.replay.build import BuildConfig, DayBefore, build_day_before, untrained_checkpoint
from i2i.app.replay.results import ChannelResult, ReplayResult
from i2i.app.replay.scoring import KS
from i2i.app.replay.split import load_split, user_cases
from i2i.core.errors import InputError

log = logging.getLogger(__name__)

EMBEDDING_CHANNELS = ("trained", "untrained", "minilm", "image")
OTHER_CHANNELS = ("cooccur", "popularity", "random", "oracle")
ALL_CHANNELS = EMBEDDING_CHANNELS + OTHER_CHANNELS
TITLES = {"trained": "trained model", "untrained": "untrained checkpoint", "minilm": "MiniLM text",
          "image": "image features"}
REFERENCE = TITLES["trained"]


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="i2i eval replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="dataset directory with notes/ and events/ (i2i data)")
    p.add_argument("--day", required=True, type=dt.date.fromisoformat, help="day D to replay, YYYY-MM-DD (UTC)")
    p.add_argument("--span", type=int, default=1,
                   help="replay the SPAN days from D on as one day (sparse data such as MovieLens; default 1)")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint as the trained model instead of training one")
    p.add_argument("--out", type=Path, default=Path("replay_out"), help="work and output directory (resumable)")
    p.add_argument("--json", type=Path, help="also write the JSON table here")
    p.add_argument("--report", type=Path, help="write a static HTML report into this directory")
    p.add_argument("--deletes", help="notes deleted on day D: Parquet table with note_id, or one id a line")
    p.add_argument("--delete-random", type=int, default=0,
                   help="also delete N random notes of the day D-1 catalogue on day D (seeded by --seed)")
    p.add_argument("--channels", default=",".join(ALL_CHANNELS),
                   help=f"comma-separated channels (default all: {','.join(ALL_CHANNELS)})")
    p.add_argument("--history", type=int, default=20, help="latest distinct clicked notes sent per user (20)")
    p.add_argument("--variant", default="notellm2", help="model variant trained (and left untrained)")
    p.add_argument("--backbone", default="offline", choices=("offline", "tiny"))
    p.add_argument("--steps", type=int, default=120, help="training steps of the day D-1 model (120)")
    p.add_argument("--batch-size", type=int, default=16, help="training pairs per step (16)")
    p.add_argument("--llm-layers", type=int, help="keep only the first N LLM layers")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device for embedding (default: cuda when present)")
    p.add_argument("--cooccur-top-t", type=int, default=100,
                   help="related notes kept per note for the co-occurrence channel (100; pairs use the default 3)")
    p.add_argument("--popularity-days", type=int, default=7, help="days of clicks the popularity channel counts (7)")
    p.add_argument("--report-users", type=int, default=8, help="users shown in the report (8)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws over users (1000)")
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_channels(text: str) -> list[str]:
    channels = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(channels) - set(ALL_CHANNELS))
    if unknown or not channels:
        raise InputError(f"--channels: unknown {unknown or 'empty list'}; choose from {','.join(ALL_CHANNELS)}")
    return [c for c in ALL_CHANNELS if c in channels]


def has_images(notes) -> bool:
    return "image" in notes.column_names and notes.column("image").null_count < notes.num_rows


def serve_channel(name: str, index, cases, k: int) -> ChannelResult:
    """Starts ``i2i serve`` on the channel's index, recalls for every user over gRPC, stops it."""
    from i2i.app.replay.channels import ServerChannel
    from i2i.testing.serving import ServerProcess

    started = time.perf_counter()
    with ServerProcess(index.index_dir, index.table_url) as server:
        channel = ServerChannel(name, server)
        print(f"{name}: serving {index.current()} on {server.address}; {len(cases)} users", flush=True)
        recalls = channel.recall(cases, k)
    notes = {"failed_requests": channel.failed, "missing_history": channel.missing_history,
             "served": sorted({f"{v} / {m[:12]}" for v, m in channel.versions})}
    return ChannelResult(name, channel.kind, recalls, time.perf_counter() - started, notes)


def local_channel(channel, cases, k: int) -> ChannelResult:
    started = time.perf_counter()
    recalls = channel.recall(cases, k)
    return ChannelResult(channel.name, channel.kind, recalls, time.perf_counter() - started)


def run(args: argparse.Namespace) -> tuple[ReplayResult, dict]:
    from i2i.app.replay.channels import local_channels
    from i2i.app.replay.embedded import ChannelIndex, CheckpointEmbedder, image_embedder, minilm_embedder
    from i2i.core.io import read_table
    from pipelines.cooccurrence import top_related

    started = time.perf_counter()
    channels = parse_channels(args.channels)
    if args.history < 1 or args.steps < 1 or args.batch_size < 2 or args.cooccur_top_t < 1:
        raise InputError("--history, --steps and --cooccur-top-t must be at least 1, --batch-size at least 2")
    if args.checkpoint is not None and not (args.checkpoint / "meta.json").exists():
        raise InputError(f"--checkpoint {args.checkpoint} is not a checkpoint directory (no meta.json)")
    split = load_split(args.data, args.day, args.deletes, args.delete_random, args.seed, args.span)
    cases, counts = user_cases(split, args.history)
    if not cases:
        raise InputError(f"no user clicked on {args.day} with a click history before it: nothing to replay")
    print(f"replay of {args.day}: {split.notes_before.num_rows} notes before, {split.new_notes.num_rows} new, "
          f"{len(split.deleted)} deleted; {counts.scored} users scored of {counts.active_users} active", flush=True)
    if "image" in channels and not has_images(split.notes_before):
        print("image: the dataset has no images; channel left out", flush=True)
        channels.remove("image")

    config = BuildConfig(variant=args.variant, backbone=args.backbone, steps=args.steps,
                         batch_size=args.batch_size, llm_layers=args.llm_layers)
    paths = DayBefore(args.out / "work")
    trained = build_day_before(split, paths, config, args.checkpoint)
    deletes = paths.deletes if split.deleted else None
    k = max(KS)
    results: list[ChannelResult] = []
    for name in [c for c in channels if c in EMBEDDING_CHANNELS]:
        if name == "trained":
            embedder = CheckpointEmbedder(TITLES[name], trained, args.device)
        elif name == "untrained":
            embedder = CheckpointEmbedder(TITLES[name], untrained_checkpoint(paths, config), args.device)
        elif name == "minilm":
            embedder = minilm_embedder(args.device)
        else:
            embedder = image_embedder(args.device)
        index = ChannelIndex(args.out / "channels" / name)
        index.prepare(embedder, paths.notes_before, paths.notes_day, deletes)
        results.append(serve_channel(TITLES[name], index, cases, k))

    related = None
    if "cooccur" in channels:
        related = top_related(read_table(paths.cooccur / "scores"), up=30.0, low=0.01, top_t=args.cooccur_top_t)
    for channel in local_channels(split.catalogue(), split.events_before, related, channels, args.popularity_days,
                                  args.seed):
        results.append(local_channel(channel, cases, k))

    summary = {
        "data": str(args.data), "day": args.day.isoformat(), "span_days": args.span, "history_length": args.history,
        "notes_before": split.notes_before.num_rows, "new_notes": split.new_notes.num_rows,
        "deleted": len(split.deleted), "events_before": split.events_before.num_rows,
        "day_events": split.day_events.num_rows, "users": asdict(counts),
        "trained_checkpoint": str(trained), "train_args": None if args.checkpoint else config.train_args(),
        "cooccur_top_t": args.cooccur_top_t, "k_requested": k,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    reference = REFERENCE if "trained" in channels else None
    result = ReplayResult(summary, cases, results, reference, args.bootstrap, args.seed)
    return result, {"split": split}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    result, context = run(args)
    result.summary["command"] = "i2i eval replay " + shlex.join(argv)
    outputs = result.write(args.out, args.json)
    print(result.to_markdown())
    if args.report is not None:
        from i2i.app.replay.report import ReportConfig, write_report

        outputs.append(write_report(result, context["split"], args.report,
                                    ReportConfig(users=args.report_users, seed=args.seed)))
    print(f"i2i eval replay {args.day}: {len(result.cases)} users, {len(result.channels)} channels in "
          f"{result.summary['wall_seconds']}s")
    for path in outputs:
        print(f"  wrote {path}")
    return 0
