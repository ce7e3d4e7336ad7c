"""``i2i index build|update|rebuild|info|rollback|gc``: the FAISS IVF index lifecycle."""
from __future__ import annotations

import argparse
import json
import time

from i2i.core.cmdline import ArgumentParser, positive_int
from index import jobs
from index.builder import BuildConfig
from index.store import DEFAULT_KEEP
from index.updater import RebuildPolicy


def _gpu_flag(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.gpu]


def parser() -> ArgumentParser:
    root = ArgumentParser(prog="i2i index", description="FAISS IVF index of note embeddings, in versioned snapshots.")
    sub = root.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, table: bool = True, keep: bool = True) -> None:
        p.add_argument("--index-dir", required=True, help="index directory (CURRENT, versions/)")
        if table:
            p.add_argument("--table", required=True, help="embedding table: parquet:DIR or redis://host:port/db")
        if keep:
            p.add_argument("--keep", type=positive_int, default=DEFAULT_KEEP,
                           help=f"versions to retain after publishing (default {DEFAULT_KEEP}); "
                                "CURRENT and versions held by running servers are always kept")

    def deletes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--deletes", help="note ids to delete: a Parquet table with a note_id column, or a text "
                                         "file with one id per line; they stay deleted in later versions")

    def notes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--notes", help="notes table (note_id, published_at): records each note's publication "
                                       "time in the version, for the recall server's published_after filter")

    def gpu(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gpu", choices=["auto", "on", "off"], default="auto",
                       help="faiss-gpu for training and adding (auto: when a GPU is present)")

    build = sub.add_parser("build", help="train a fresh IVF index from the table and publish it")
    common(build)
    build.add_argument("--model-version", help="model version to index (default: the only one in the table)")
    build.add_argument("--factory", default="Flat",
                       help="IVF encoding (Flat, SQ8, PQ16, PQ16x4fs...) or a full factory string "
                            "such as 'IVF1024,PQ16' or 'OPQ16,IVF{nlist},PQ16' (default Flat)")
    build.add_argument("--nlist", type=positive_int, help="inverted lists (default: ~4 sqrt(n), >= 39 vectors per list)")
    build.add_argument("--train-sample", type=positive_int, help="vectors to train on (default 50 per list)")
    build.add_argument("--metric", choices=["ip", "l2"], default="ip",
                       help="ip: inner product on L2-normalised vectors (default); l2: squared L2")
    build.add_argument("--rerank", choices=["auto", "on", "off"], default="auto",
                       help="exact re-ranking from stored vectors (auto: on for PQ encodings)")
    build.add_argument("--nprobe", type=positive_int, default=None,
                       help="default nprobe recorded for searches (default: the smallest nprobe whose merged "
                            "recall@--calibration-k over 20 random histories of --calibration-history notes "
                            "reaches --target-recall)")
    build.add_argument("--target-recall", type=float, default=BuildConfig.target_recall,
                       help=f"recall the default nprobe must reach (default {BuildConfig.target_recall})")
    build.add_argument("--calibration-k", type=positive_int, default=BuildConfig.calibration_k,
                       help=f"results per request the recall is measured at (default {BuildConfig.calibration_k})")
    build.add_argument("--calibration-history", type=positive_int, default=BuildConfig.calibration_history,
                       help=f"history notes per calibration request (default {BuildConfig.calibration_history}; "
                            "1 = recall of single notes)")
    build.add_argument("--seed", type=int, default=1234, help="seed of the training sample")
    deletes(build)
    notes(build)
    gpu(build)

    update = sub.add_parser("update", help="add, replace and remove notes in a child of CURRENT, no retraining")
    common(update)
    update.add_argument("--model-version", help="must equal the current version's model version (the default)")
    deletes(update)
    notes(update)
    update.add_argument("--max-imbalance", type=float, default=RebuildPolicy.max_imbalance,
                        help="advise a rebuild above this list-size imbalance (and 1.5x the trained one)")
    update.add_argument("--max-growth", type=float, default=RebuildPolicy.max_growth,
                        help="advise a rebuild when ntotal exceeds this multiple of the trained corpus")
    gpu(update)

    rebuild = sub.add_parser("rebuild", help="retrain from the table with CURRENT's settings and tombstones")
    common(rebuild)
    rebuild.add_argument("--nlist", type=positive_int, help="inverted lists (default: chosen for today's corpus)")
    rebuild.add_argument("--factory", help="change the encoding (default: CURRENT's)")
    rebuild.add_argument("--train-sample", type=positive_int, help="vectors to train on (default 50 per list)")
    rebuild.add_argument("--model-version",
                         help="index this model version's embeddings (default: CURRENT's); after a retrain, the "
                              "new model's version, keeping CURRENT's settings and tombstones")
    deletes(rebuild)
    notes(rebuild)
    gpu(rebuild)

    info = sub.add_parser("info", help="versions, counts, imbalance, model version, factory")
    common(info, table=False, keep=False)
    info.add_argument("--verify", action="store_true", help="also verify every version's checksums")
    info.add_argument("--json", action="store_true", help="print JSON")

    rollback = sub.add_parser("rollback", help="point CURRENT at an older version")
    common(rollback, table=False, keep=False)
    rollback.add_argument("--to", required=True, help="version to serve, e.g. v000003")

    gc = sub.add_parser("gc", help="apply retention: delete all but the newest --keep versions")
    common(gc, table=False)
    return root


def _print_info(report: dict) -> None:
    print(f"index {report['index_dir']}: current {report['current'] or '-'}, {len(report['versions'])} versions")
    header = f"  {'version':<10} {'op':<8} {'parent':<9} {'model_version':<16} {'factory':<18} {'ntotal':>10} " \
             f"{'imbalance':>9} {'tomb':>6}  created_at"
    print(header)
    for row in report["versions"]:
        flags = ("*" if row["current"] else " ") + ("H" if row["held"] else " ")
        print(f"{flags}{row['version']:<10} {row['operation']:<8} {row['parent'] or '-':<9} "
              f"{row['model_version']:<16} {row['factory']:<18} {row['ntotal']:>10} {row['imbalance']:>9.3f} "
              f"{row['tombstones']:>6}  {row['created_at']}")
    print("  (* current, H held by a running process)")
    for reason in report["rebuild_advice"]:
        print(f"  rebuild advised: {reason}")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    if args.command == "build":
        config = BuildConfig(factory=args.factory, nlist=args.nlist, train_sample=args.train_sample,
                             metric=args.metric, rerank={"auto": None, "on": True, "off": False}[args.rerank],
                             default_nprobe=args.nprobe, target_recall=args.target_recall,
                             calibration_k=args.calibration_k, calibration_history=args.calibration_history,
                             seed=args.seed, use_gpu=_gpu_flag(args))
        summary = jobs.run(jobs.IndexJob("build", args.index_dir, args.table, build=config,
                                         model_version=args.model_version, deletes=args.deletes, keep=args.keep,
                                         notes=args.notes))
    elif args.command == "update":
        policy = RebuildPolicy(max_imbalance=args.max_imbalance, max_growth=args.max_growth)
        summary = jobs.run(jobs.IndexJob("update", args.index_dir, args.table, model_version=args.model_version,
                                         deletes=args.deletes, keep=args.keep, policy=policy,
                                         use_gpu=_gpu_flag(args), notes=args.notes))
    elif args.command == "rebuild":
        summary = jobs.run(jobs.IndexJob("rebuild", args.index_dir, args.table, deletes=args.deletes, keep=args.keep,
                                         nlist=args.nlist, factory=args.factory, train_sample=args.train_sample,
                                         use_gpu=_gpu_flag(args), notes=args.notes,
                                         model_version=args.model_version))
    elif args.command == "info":
        report = jobs.info(args.index_dir, verify=args.verify)
        print(json.dumps(report, indent=2)) if args.json else _print_info(report)
        return 0
    elif args.command == "rollback":
        previous, to = jobs.rollback_job(args.index_dir, args.to)
        print(f"rollback: CURRENT {previous or '-'} -> {to} in {args.index_dir} ({time.perf_counter() - started:.2f}s)")
        return 0
    else:
        report = jobs.gc_job(args.index_dir, args.keep)
        print(f"gc: removed {len(report.removed)} versions {report.removed}, kept {report.kept} "
              f"(held {report.held}), cleared {report.staging_removed} unfinished staging directories")
        return 0
    for line in summary.lines():
        print(line)
    print(f"  total {time.perf_counter() - started:.2f}s")
    return 0
