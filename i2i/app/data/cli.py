"""``i2i data``: writes the sample datasets as contract tables (notes, events) under one directory."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from i2i.app.data.fashion_notes import FashionConfig as FashionDefaults
from i2i.core.cmdline import ArgumentParser, positive_int
from i2i.core.io import atomic_dir, write_events_by_day, write_table
from i2i.core.schemas import conform


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="i2i data", description=__doc__)
    sub = parser.add_subparsers(dest="dataset", required=True)
    fashion = sub.add_parser("fashion-notes", help="semi-synthetic product notes with real photos (Fashion-MNIST)")
    defaults = FashionDefaults()
    fashion.add_argument("--out", required=True, type=Path,
                         help="output directory (notes/, events/, deletes/, _attributes/, _SUMMARY.json)")
    fashion.add_argument("--notes", type=positive_int, default=defaults.notes, help=f"notes in all (default {defaults.notes})")
    fashion.add_argument("--users", type=positive_int, default=defaults.users, help=f"default {defaults.users}")
    fashion.add_argument("--days", type=positive_int, default=defaults.days, help=f"days of events (default {defaults.days})")
    fashion.add_argument("--test-days", type=int, default=defaults.test_days,
                         help=f"last days whose notes form the calibration's test pool (default {defaults.test_days})")
    fashion.add_argument("--seed", type=int, default=0)
    fashion.add_argument("--start", type=dt.date.fromisoformat, default=defaults.start,
                         help="first day of events (YYYY-MM-DD)")
    fashion.add_argument("--no-calibration", action="store_true",
                         help="skip the calibration figures (related pairs by DuckDB, oracle recall)")
    movielens = sub.add_parser("movielens", help="MovieLens-100k (from the recbole wheel) as notes and events")
    movielens.add_argument("--out", required=True, type=Path)
    return parser


def write_deletes_by_day(deletes, final: Path, days: list[str]) -> Path:
    """Deleted note ids per UTC day (``dt=YYYY-MM-DD/``, one partition for every day, empty or not)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    day = pc.strftime(deletes.column("deleted_at"), format="%Y-%m-%d", locale="C")
    with atomic_dir(final) as tmp:
        for value in days:
            (tmp / f"dt={value}").mkdir()
            pq.write_table(deletes.filter(pc.equal(day, value)), tmp / f"dt={value}" / "part-00000.parquet")
    return final


def write_dataset(out: Path, notes, events, extra: dict, paths: dict | None = None) -> dict:
    notes = conform(notes, "notes")
    events = conform(events, "events")
    write_table(notes, out / "notes")
    write_events_by_day(events, out / "events")
    summary = {"notes": notes.num_rows, "events": events.num_rows, **extra,
               "paths": {"notes": str(out / "notes"), "events": str(out / "events"), **(paths or {})}}
    (out / "_SUMMARY.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if args.dataset == "fashion-notes":
        from i2i.app.data import fashion_notes

        config = fashion_notes.FashionConfig(
            notes=args.notes, users=args.users,
            days=args.days, test_days=args.test_days, seed=args.seed, start=args.start)
        world = fashion_notes.generate(config)
        attributes = fashion_notes.attributes_table(world)
        extra = dict(world.meta)
        if not args.no_calibration:
            from i2i.app.data.calibration import calibrate, format_calibration

            since_ms = int(config.test_since.timestamp() * 1000)
            extra["calibration"] = calibrate(world.notes, world.events, attributes, since_ms)
            print(format_calibration(extra["calibration"]))
        write_table(attributes, args.out / "_attributes")
        days = [(config.start + dt.timedelta(days=d)).isoformat() for d in range(config.days)]
        write_deletes_by_day(world.deletes, args.out / "deletes", days)
        summary = write_dataset(args.out, world.notes, world.events, extra,
                                {"deletes": str(args.out / "deletes"), "attributes": str(args.out / "_attributes")})
    else:
        from i2i.app.data import movielens

        data = movielens.load()
        summary = write_dataset(args.out, data.notes, data.events, {"source": "MovieLens-100k"})
    print(f"i2i data {args.dataset}: {summary['notes']} notes, {summary['events']} events "
          f"in {time.perf_counter() - started:.1f}s -> {args.out}")
    return 0
