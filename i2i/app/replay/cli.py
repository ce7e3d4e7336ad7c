"""``i2i eval replay``: a time-split next-day replay of the online path (paper Figure 5).

Everything is built as of day D-1 with the project's own stages (co-occurrence, pairs, training
with the recipe or a given checkpoint, embeddings, index); day D's offline phase embeds the new
notes and updates the index with the deletions; then every user who clicked on day D sends their
click history before D to a real recall server over gRPC, and the recalled lists are scored
against the day D clicks (HitRate@k, Recall@k; new vs older notes; bootstrap intervals over users).
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
from pathlib import Path

from i2i.app.replay.config import ALL_CHANNELS, BACKBONES, ReplayConfig
from i2i.core.cmdline import ArgumentParser, non_negative_int, positive_int
from i2i.core.errors import InputError


def day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a day as YYYY-MM-DD, got {text!r}") from None


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (in-batch negatives), got {text}")
    return value


def build_parser() -> ArgumentParser:
    defaults = ReplayConfig(Path("."), dt.date.min)
    p = ArgumentParser(prog="i2i eval replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="dataset directory with notes/ and events/ (i2i data)")
    p.add_argument("--day", required=True, type=day, help="day D to replay, YYYY-MM-DD (UTC)")
    p.add_argument("--span", type=positive_int, default=defaults.span,
                   help="replay the SPAN days from D on as one day (sparse data such as MovieLens; default 1)")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint as the trained model instead of training one")
    p.add_argument("--out", type=Path, default=defaults.out, help="work and output directory (resumable)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write the JSON table here")
    p.add_argument("--report", type=Path, help="write a static HTML report into this directory")
    p.add_argument("--deletes", help="notes deleted on day D: Parquet table with note_id, or one id a line")
    p.add_argument("--delete-random", type=non_negative_int, default=0,
                   help="also delete N random notes of the day D-1 catalogue on day D (seeded by --seed)")
    p.add_argument("--channels", default=",".join(ALL_CHANNELS),
                   help=f"comma-separated channels (default all: {','.join(ALL_CHANNELS)})")
    p.add_argument("--history", type=positive_int, default=defaults.history,
                   help="latest distinct clicked notes sent per user (20)")
    p.add_argument("--variant", default=defaults.variant, help="model variant trained (and left untrained)")
    p.add_argument("--backbone", default=defaults.backbone, choices=BACKBONES,
                   help="the training recipe's preset: offline (cpu_offline, default) or tiny (tests)")
    p.add_argument("--train-config", help="JSON recipe over the preset, as i2i train --config "
                                          "(e.g. embedding/configs/gpu_full.json)")
    p.add_argument("--steps", type=positive_int, help="training steps of the day D-1 model (default: the recipe's)")
    p.add_argument("--batch-size", type=at_least_two, help="training pairs per step (default: the recipe's)")
    p.add_argument("--llm-layers", type=positive_int, help="keep only the first N LLM layers (default: the recipe's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device for embedding (default: cuda when present)")
    p.add_argument("--cooccur-top-t", type=positive_int, default=defaults.cooccur_top_t,
                   help="related notes kept per note for the co-occurrence channel (100; pairs use the default 3)")
    p.add_argument("--popularity-days", type=positive_int, default=defaults.popularity_days,
                   help="days of clicks the popularity channel counts (7)")
    p.add_argument("--report-users", type=non_negative_int, default=defaults.report_users,
                   help="users shown in the report (8)")
    p.add_argument("--bootstrap", type=positive_int, default=defaults.bootstrap,
                   help="bootstrap draws over users (1000)")
    p.add_argument("--recall-workers", type=positive_int, default=defaults.recall_workers,
                   help="recall requests in flight per server channel (4); the lists do not depend on it")
    p.add_argument("--seed", type=int, default=defaults.seed)
    return p


def parse_channels(text: str) -> tuple[str, ...]:
    channels = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(channels) - set(ALL_CHANNELS))
    if unknown or not channels:
        raise InputError(f"--channels: unknown {unknown or 'empty list'}; choose from {','.join(ALL_CHANNELS)}")
    return tuple(c for c in ALL_CHANNELS if c in channels)


def config_from_argv(argv: list[str]) -> ReplayConfig:
    """The typed config from the command line's options."""
    args = vars(build_parser().parse_args(argv))
    args["channels"] = parse_channels(args["channels"])
    return ReplayConfig(**args, command="i2i eval replay " + shlex.join(argv))


def main(argv: list[str]) -> int:
    from i2i.app.replay.run import run

    config = config_from_argv(argv)
    result = run(config)
    print(result.to_markdown())
    print(f"i2i eval replay {config.day}: {len(result.cases)} users, {len(result.channels)} channels in "
          f"{result.summary['wall_seconds']}s")
    for stage, seconds in result.summary["stage_seconds"].items():
        print(f"  {stage:<44} {seconds:8.1f}s")
    for path in result.outputs:
        print(f"  wrote {path}")
    return 0
