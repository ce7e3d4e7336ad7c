"""Cost curve of the recall server: QPS, p99 and memory against index size, with a plot.

For each size (100k, 1M and 4M notes by default, Flat codes) it builds (once, cached) a table and
an index with ``i2i index build`` (nlist capped at ``--max-nlist`` so training stays within the
machine), starts ``i2i serve`` at its defaults (mode ``serve``) and without its neighbour cache
(mode ``nocache``, every history note searched), and drives each with the closed-loop clients of
``bench/recall_load.py`` (history 50, k 200, 8 clients). It records QPS, p50/p99, errors, server
CPU per request, recall@200 against exact search, and the server's resident and peak memory
(VmRSS / VmHWM), prints a table and writes a PNG plot. Each size and mode runs ``--repeats``
times (3), the modes interleaved, and the medians are reported with their range: on shared CPUs
one run's saturated figures can be 1.5x off the next.

Sizes from ``--large-from`` (10M) use ``--large-factory`` (SQ8), ``--large-build-args`` (``--rerank
on``: SQ8 codes alone cap the merged recall below 0.95 there) and ``--large-serve-args``
(``--processes 1``: two processes' copies of a 10M index and table do not fit 24 GB).

    python bench/recall_cost_curve.py [--sizes 100000,1000000,4000000] [--factory Flat] [--modes serve,nocache]
                                      [--repeats 3]
                                      [--max-nlist 4096] [--duration 8] [--plot docs/recall-cost-curve.png]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_load as load  # noqa: E402


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a server, from /proc: summed over its processes (a page two
    processes share counts twice; each process holds its own index, so few are shared)."""
    rss = peak = 0.0
    for member in load.process_tree(pid):
        try:
            text = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return rss, peak


def auto_nlist(n: int) -> int:
    return int(max(1, min(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))), n // 39)))


def measure(cfg: load.BenchConfig, mode: str, truth: list[list[int]]) -> dict:
    index_dir, table_url = load.prepare(cfg)
    histories = load.sample_histories(cfg)
    process, target, metrics_port = load.start_server(cfg, index_dir, table_url, mode)
    try:
        load.wait_serving(target)
        load.wait_freshness_checked(metrics_port)
        recall = load.measure_recall(cfg, target, histories[:cfg.recall_histories], truth)
        cpu_before = load.cpu_seconds(process.pid)
        figures = load.drive(cfg, target, histories)
        server_cpu = load.cpu_seconds(process.pid) - cpu_before
        rss, peak = memory_mb(process.pid)
    finally:
        load.stop_server(process)
    answered = max(figures["requests"] * (cfg.warmup + cfg.duration) / cfg.duration, 1)
    return {**figures, "recall": recall, "server_cpu_ms": 1000 * server_cpu / answered, "rss_mb": rss,
            "peak_mb": peak}


MODE_LABELS = {"serve": "i2i serve defaults", "nocache": "without the neighbour cache"}
SPREAD = ("qps", "p99", "server_cpu_ms")  # figures printed as median (min-max) over the repeats


def combine(runs: list[dict]) -> dict:
    """One row from a size and mode's repeated runs: medians, with the range of the noisy figures."""
    row = {key: float(np.median([run[key] for run in runs])) for key in
           ("qps", "p50", "p99", "server_cpu_ms", "recall", "rss_mb", "peak_mb")}
    row["errors"] = sum(run["errors"] for run in runs)
    for key in SPREAD:
        row[f"{key}_min"], row[f"{key}_max"] = min(run[key] for run in runs), max(run[key] for run in runs)
    return row


def plot(rows: list[dict], path: Path, title: str, footnote: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    for axis, key, label in zip(axes, ("qps", "p99", "peak_mb"), ("saturated QPS (8 clients)", "p99 ms",
                                                                  "server peak memory MiB (all processes)")):
        for mode in modes:
            mine = [row for row in rows if row["mode"] == mode]
            x, y = [row["notes"] for row in mine], [row[key] for row in mine]
            if key in SPREAD:
                error = [[row[key] - row[f"{key}_min"] for row in mine], [row[f"{key}_max"] - row[key] for row in mine]]
                axis.errorbar(x, y, yerr=error, marker="o", capsize=3, label=MODE_LABELS.get(mode, mode))
            else:
                axis.plot(x, y, marker="o", label=MODE_LABELS.get(mode, mode))
            if mode == modes[0]:
                for row in mine:
                    axis.annotate(row["short"], (row["notes"], row[key]), textcoords="offset points", xytext=(5, -10),
                                  fontsize=8)
        axis.legend(fontsize=7, loc="best")
        axis.set_xscale("log")
        axis.set_xlabel("notes in the index")
        axis.set_title(label, fontsize=10)
        axis.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.text(0.5, 0.01, footnote, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000,4000000")
    p.add_argument("--factory", default="Flat", help="i2i index build --factory for every size")
    p.add_argument("--large-factory", default="SQ8", help="factory for sizes of --large-from notes and more")
    p.add_argument("--large-from", type=int, default=10_000_000)
    p.add_argument("--large-build-args", default="--rerank on",
                   help="extra i2i index build options for sizes of --large-from notes and more (default exact "
                        "re-ranking: SQ8 codes alone cap merged recall@200 at 0.94 on 10M tight notes)")
    p.add_argument("--large-serve-args", default="--processes 1",
                   help="extra i2i serve options for sizes of --large-from notes and more (default one process: "
                        "each process holds its own copy of the index and table)")
    p.add_argument("--max-nlist", type=int, default=4096, help="cap on the builder's ~4 sqrt(n) lists")
    p.add_argument("--data", choices=["tight", "loose"], default="tight")
    p.add_argument("--modes", default="serve,nocache", help="servers to run at each size (see recall_load.py)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each size and mode, the modes interleaved; medians are reported with their range")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--recall-histories", type=int, default=20)
    p.add_argument("--cache-dir", type=Path, default=load.BenchConfig.cache_dir)
    p.add_argument("--plot", type=Path, default=load.ROOT / "docs" / "recall-cost-curve.png")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    print(f"recall cost curve: sizes {args.sizes}, {args.data} data, history 50, k 200, 8 closed-loop clients, "
          f"{args.repeats} runs of each size and mode, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "at start", flush=True)
    rows, large_labels = [], set()
    modes = [m for m in args.modes.split(",") if m]
    for size in (int(s) for s in args.sizes.split(",") if s):
        large = size >= args.large_from
        factory = args.large_factory if large else args.factory
        serve_args = args.large_serve_args if large else ""
        build_args = args.large_build_args if large else ""
        cfg = load.BenchConfig(notes=size, data=args.data, nlist=min(auto_nlist(size), args.max_nlist),
                               factory=factory, duration=args.duration, warmup=args.warmup,
                               recall_histories=args.recall_histories, cache_dir=args.cache_dir,
                               serve_args=serve_args, build_args=build_args)
        started = time.perf_counter()
        load.prepare(cfg)
        truth = load.exact_merged(cfg, load.sample_histories(cfg)[:cfg.recall_histories])
        label = ", ".join([f"{factory}, nlist {cfg.nlist}", *(a for a in (build_args, serve_args) if a)])
        if large:
            large_labels.add(label)
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        for repeat in range(args.repeats):
            for mode in modes:
                run = measure(cfg, mode, truth)
                runs[mode].append(run)
                print(f"{size:>10,} notes ({label}, {mode}, run {repeat + 1}): {run['qps']:.1f} QPS, p50 "
                      f"{run['p50']:.2f} ms, p99 {run['p99']:.2f} ms, errors {run['errors']}, server CPU "
                      f"{run['server_cpu_ms']:.2f} ms/request, recall@200 {run['recall']:.4f}, memory "
                      f"{run['rss_mb']:.0f} MiB (peak {run['peak_mb']:.0f}) [{time.perf_counter() - started:.0f} s, "
                      f"load average {os.getloadavg()[0]:.1f}]", flush=True)
        rows += [{"notes": size, "mode": mode, "label": label, "short": factory + ("*" if large else ""),
                  **combine(runs[mode])} for mode in modes]
    print()
    print(f"medians of {args.repeats} runs (range in brackets)")
    print(f"{'notes':>10} {'index':<36} {'mode':<8} {'QPS':>19} {'p50 ms':>7} {'p99 ms':>19} {'errors':>6} "
          f"{'CPU ms/req':>19} {'recall':>7} {'RSS MiB':>8} {'peak MiB':>8}")

    def spread(row: dict, key: str) -> str:
        digits = 2 if key == "server_cpu_ms" else 1
        return f"{row[key]:.{digits}f} [{row[key + '_min']:.{digits}f}-{row[key + '_max']:.{digits}f}]"

    for row in rows:
        print(f"{row['notes']:>10,} {row['label']:<36} {row['mode']:<8} {spread(row, 'qps'):>19} {row['p50']:>7.2f} "
              f"{spread(row, 'p99'):>19} {row['errors']:>6} {spread(row, 'server_cpu_ms'):>19} {row['recall']:>7.4f} "
              f"{row['rss_mb']:>8.0f} {row['peak_mb']:>8.0f}")
    if rows and args.plot:
        footnote = "; ".join(f"*{label}" for label in sorted(large_labels)) or " "
        plot(rows, args.plot, f"i2i serve defaults, history 50, k 200, 8 closed-loop clients, {os.cpu_count()} CPUs, "
                              f"median and range of {args.repeats} runs", footnote)
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
