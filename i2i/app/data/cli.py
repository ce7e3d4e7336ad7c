"""``i2i data``: writes the sample datasets as contract tables (notes, events) under one directory."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from i2i.core.cmdline import ArgumentParser, positive_int
from i2i.core.io import write_events_by_day, write_table
from i2i.core.schemas import conform


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="i2i data", description=__doc__)
    sub = parser.add_subparsers(dest="dataset", required=True)
    fashion = sub.add_parser("fashion-notes", help="semi-synthetic notes with real product photos (Fashion-MNIST)")
    fashion.add_argument("--out", required=True, type=Path, help="output directory (notes/, events/)")
    fashion.add_argument("--notes", type=positive_int, default=2000)
    fashion.add_argument("--users", type=positive_int, default=500)
    fashion.add_argument("--days", type=positive_int, default=14)
    fashion.add_argument("--seed", type=int, default=0)
    fashion.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1),
                         help="first day of events (YYYY-MM-DD)")
    movielens = sub.add_parser("movielens", help="MovieLens-100k (from the recbole wheel) as notes and events")
    movielens.add_argument("--out", required=True, type=Path)
    return parser


def write_dataset(out: Path, notes, events, extra: dict) -> dict:
    notes = conform(notes, "notes")
    events = conform(events, "events")
    write_table(notes, out / "notes")
    write_events_by_day(events, out / "events")
    summary = {"notes": notes.num_rows, "events": events.num_rows, **extra,
               "paths": {"notes": str(out / "notes"), "events": str(out / "events")}}
    (out / "_SUMMARY.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if args.dataset == "fashion-notes":
        from i2i.app.data import fashion_notes

        config = fashion_notes.FashionConfig(
            notes=args.notes, users=args.users,
            days=args.days, seed=args.seed, start=args.start)
        world = fashion_notes.generate(config)
        write_table(fashion_notes.attributes_table(world.notes.column("note_id").to_pylist(), world.attributes),
                    args.out / "_attributes")
        summary = write_dataset(args.out, world.notes, world.events, world.meta)
    else:
        from i2i.app.data import movielens

        data = movielens.load()
        summary = write_dataset(args.out, data.notes, data.events, {"source": "MovieLens-100k"})
    print(f"i2i data {args.dataset}: {summary['notes']} notes, {summary['events']} events "
          f"in {time.perf_counter() - started:.1f}s -> {args.out}")
    return 0
