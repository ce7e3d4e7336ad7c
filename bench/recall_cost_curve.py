"""Cost curve of the recall server: QPS, p99 and memory against index size, with a plot.

For each size (100k, 1M and 4M notes by default, Flat codes) it builds (once, cached) a table and
an index with ``i2i index build`` (nlist capped at ``--max-nlist`` so training stays within the
machine), starts ``i2i serve`` at its defaults (mode ``serve``) and without its neighbour cache
(mode ``nocache``, every history note searched), and drives each with the closed-loop clients of
``bench/recall_load.py`` (history 50, k 200, 8 clients). It records QPS, p50/p99, errors, server
CPU per request, recall@200 against exact search, and the server's resident and peak memory
(VmRSS / VmHWM), prints a table and writes a PNG plot.

    python bench/recall_cost_curve.py [--sizes 100000,1000000,4000000] [--factory Flat] [--modes serve,nocache]
                                      [--max-nlist 4096] [--duration 8] [--plot docs/recall-cost-curve.png]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

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


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    for axis, key, label in zip(axes, ("qps", "p99", "peak_mb"), ("saturated QPS (8 clients)", "p99 ms",
                                                                  "server peak memory MiB")):
        for mode in modes:
            mine = [row for row in rows if row["mode"] == mode]
            axis.plot([row["notes"] for row in mine], [row[key] for row in mine], marker="o",
                      label=MODE_LABELS.get(mode, mode))
            if mode == modes[0]:
                for row in mine:
                    axis.annotate(row["label"], (row["notes"], row[key]), textcoords="offset points", xytext=(4, 4),
                                  fontsize=8)
        axis.legend(fontsize=7)
        axis.set_xscale("log")
        axis.set_xlabel("notes in the index")
        axis.set_title(label)
        axis.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000,4000000")
    p.add_argument("--factory", default="Flat", help="i2i index build --factory for every size")
    p.add_argument("--large-factory", default="SQ8", help="factory for sizes of --large-from notes and more")
    p.add_argument("--large-from", type=int, default=10_000_000)
    p.add_argument("--max-nlist", type=int, default=4096, help="cap on the builder's ~4 sqrt(n) lists")
    p.add_argument("--data", choices=["tight", "loose"], default="tight")
    p.add_argument("--modes", default="serve,nocache", help="servers to run at each size (see recall_load.py)")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--recall-histories", type=int, default=20)
    p.add_argument("--cache-dir", type=Path, default=load.BenchConfig.cache_dir)
    p.add_argument("--plot", type=Path, default=load.ROOT / "docs" / "recall-cost-curve.png")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"recall cost curve: sizes {args.sizes}, {args.data} data, history 50, k 200, 8 closed-loop clients, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        factory = args.large_factory if size >= args.large_from else args.factory
        cfg = load.BenchConfig(notes=size, data=args.data, nlist=min(auto_nlist(size), args.max_nlist),
                               factory=factory, duration=args.duration, warmup=args.warmup,
                               recall_histories=args.recall_histories, cache_dir=args.cache_dir)
        started = time.perf_counter()
        load.prepare(cfg)
        truth = load.exact_merged(cfg, load.sample_histories(cfg)[:cfg.recall_histories])
        for mode in (m for m in args.modes.split(",") if m):
            row = {"notes": size, "mode": mode, "label": f"{factory}, nlist {cfg.nlist}", **measure(cfg, mode, truth)}
            rows.append(row)
            print(f"{size:>10,} notes ({row['label']}, {mode}): {row['qps']:.1f} QPS, p50 {row['p50']:.2f} ms, p99 "
                  f"{row['p99']:.2f} ms, errors {row['errors']}, server CPU {row['server_cpu_ms']:.2f} ms/request, "
                  f"recall@200 {row['recall']:.4f}, memory {row['rss_mb']:.0f} MiB (peak {row['peak_mb']:.0f}) "
                  f"[{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}]", flush=True)
    print()
    print(f"{'notes':>10} {'index':<20} {'mode':<8} {'QPS':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU ms/req':>10} "
          f"{'recall':>7} {'RSS MiB':>8} {'peak MiB':>8}")
    for row in rows:
        print(f"{row['notes']:>10,} {row['label']:<20} {row['mode']:<8} {row['qps']:>7.1f} {row['p50']:>7.2f} {row['p99']:>7.2f} "
              f"{row['errors']:>6} {row['server_cpu_ms']:>10.2f} {row['recall']:>7.4f} {row['rss_mb']:>8.0f} "
              f"{row['peak_mb']:>8.0f}")
    if rows and args.plot:
        plot(rows, args.plot, f"i2i serve defaults, history 50, k 200, 8 closed-loop clients, {os.cpu_count()} "
                              f"CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
