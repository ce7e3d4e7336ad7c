"""Benchmark of the IVF index against exact search, measured in the same run.

Prints: train and add time, an operating-point table of batched search QPS and recall@100 against
exact ``IndexFlatIP`` at several nprobe, update throughput (adds/s, removes/s), publish and
verified-load time, and memory. Target: recall@100 >= 0.95 of exact at >= 50x exact search's QPS.

    python bench/index_bench.py                       # 1M x 64-d clustered vectors
    python bench/index_bench.py --n 100000 --factories Flat SQ8 PQ16
    python bench/index_bench.py --table parquet:DIR   # real model embeddings
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index import jobs  # noqa: E402
from index.builder import BuildConfig, build, normalize_rows  # noqa: E402
from index.source import Embeddings, from_arrays, read_table  # noqa: E402
from index.store import IndexStore  # noqa: E402
from index.updater import apply_update  # noqa: E402


@dataclass
class OperatingPoint:
    factory: str
    nprobe: int
    qps: float
    speedup: float  # QPS / exact QPS
    recall_at_k: float  # |IVF top-k ∩ exact top-k| / k, averaged over queries


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Unit vectors scattered around random centres, generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = centres[rng.integers(0, clusters, stop - start)]
        chunk += spread * rng.standard_normal(chunk.shape).astype(np.float32)
        out[start:stop] = chunk
    return normalize_rows(out)


def timed_search(search, queries: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` QPS of one batched call over all queries, and its labels."""
    best, labels = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        labels = search(queries)
        best = min(best, time.perf_counter() - started)
    return len(queries) / best, labels


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) / k for f, t in zip(found, truth)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="corpus size (synthetic)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.7, help="noise around cluster centres")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--factories", nargs="+", default=["Flat"], help="encodings: Flat SQ8 PQ16 ...")
    parser.add_argument("--nlist", type=int, help="default: the builder's choice for --n")
    parser.add_argument("--update-fraction", type=float, default=0.05, help="share of the corpus added/removed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="FAISS OpenMP threads (default: all cores)")
    parser.add_argument("--table", help="benchmark real embeddings from a TABLE url instead of synthetic ones")
    parser.add_argument("--model-version")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    started = time.perf_counter()
    if args.table:
        corpus = read_table(args.table, args.model_version)
        rng = np.random.default_rng(0)
        query_rows = rng.choice(len(corpus), size=min(args.queries, len(corpus)), replace=False)
        queries = normalize_rows(corpus.vectors[query_rows])
        source = f"{args.table} ({corpus.model_version})"
    else:
        data = clustered(args.n + args.queries, args.dim, args.clusters, args.spread, seed=0)
        queries, vectors = data[:args.queries], data[args.queries:]
        corpus = from_arrays([f"n{i}" for i in range(args.n)], vectors, "synthetic")
        source = f"synthetic clustered ({args.clusters} clusters, spread {args.spread})"
    print(f"corpus: {len(corpus)} x {corpus.dim} {source}; {len(queries)} queries, k={args.k}; "
          f"{faiss.omp_get_max_threads()} threads; data ready in {time.perf_counter() - started:.1f}s")

    base_rss = rss_mib()
    flat = faiss.IndexFlatIP(corpus.dim)
    flat.add(normalize_rows(corpus.vectors))
    exact_qps, truth = timed_search(lambda q: flat.search(q, args.k)[1], queries, 1)
    print(f"exact IndexFlatIP: {exact_qps:,.0f} QPS (batched, {len(queries)} queries)")
    del flat

    figures: dict = {"n": len(corpus), "dim": corpus.dim, "k": args.k, "exact_qps": exact_qps,
                     "threads": faiss.omp_get_max_threads(), "builds": [], "points": []}
    points: list[OperatingPoint] = []
    for encoding in args.factories:
        before = rss_mib()
        result = build(corpus, BuildConfig(factory=encoding, nlist=args.nlist))
        index_mib = faiss.serialize_index(result.contents.index).nbytes / 2**20
        vectors_mib = result.contents.vectors.nbytes / 2**20 if result.contents.vectors is not None else 0.0
        with tempfile.TemporaryDirectory() as tmp:
            store = IndexStore(tmp)
            published = time.perf_counter()
            with store.writer_lock():
                summary = jobs._publish_built(store, result, corpus, "build", BuildConfig(factory=encoding), 5, {})
            publish_s = time.perf_counter() - published
            loading = time.perf_counter()
            loaded = store.load(hold=False)
            load_s = time.perf_counter() - loading
            build_row = {"factory": result.factory, "train_size": result.train_size, **result.timings,
                         "publish_s": publish_s, "verified_load_s": load_s, "index_mib": index_mib,
                         "rerank_vectors_mib": vectors_mib, "rss_growth_mib": rss_mib() - before,
                         "imbalance": result.imbalance, "rerank": result.rerank}
            figures["builds"].append(build_row)
            print(f"\nbuild {result.factory}: train {result.timings['train_s']:.1f}s on {result.train_size} vectors, "
                  f"add {result.timings['add_s']:.1f}s ({len(corpus) / result.timings['add_s']:,.0f} vec/s), "
                  f"publish {publish_s:.1f}s, verified load {load_s:.1f}s; index {index_mib:.0f} MiB"
                  + (f" + re-rank vectors {vectors_mib:.0f} MiB" if vectors_mib else "")
                  + f", imbalance {result.imbalance:.3f}")
            print(f"  {'nprobe':>6} {'QPS':>10} {'x exact':>8} {'recall@' + str(args.k):>11}")
            for nprobe in args.nprobe:
                qps, labels = timed_search(lambda q: loaded.search_labels(q, args.k, nprobe=nprobe)[1], queries,
                                           args.repeats)
                point = OperatingPoint(result.factory, nprobe, qps, qps / exact_qps, recall(labels, truth))
                points.append(point)
                target = " <- meets target" if point.recall_at_k >= 0.95 and point.speedup >= 50 else ""
                print(f"  {nprobe:>6} {qps:>10,.0f} {point.speedup:>8.1f} {point.recall_at_k:>11.4f}{target}")

            # Update throughput: remove a share of the notes, then add the same number of new ones.
            share = max(1, int(args.update_fraction * len(corpus)))
            contents = loaded.contents
            contents.vectors = None if contents.vectors is None else np.asarray(contents.vectors)
            kept = Embeddings(corpus.note_ids[share:], corpus.vectors[share:], corpus.model_version)
            removal = apply_update(loaded.manifest_record, contents, kept, [])
            removes_per_s = share / (removal.timings["plan_s"] + removal.timings["remove_s"])
            grown = Embeddings(corpus.note_ids[share:] + [f"new{i}" for i in range(share)],
                               np.concatenate([corpus.vectors[share:], corpus.vectors[:share]]), corpus.model_version)
            addition = apply_update(loaded.manifest_record, removal.contents, grown, [])
            adds_per_s = share / (addition.timings["plan_s"] + addition.timings["add_s"])
            figures["builds"][-1].update(adds_per_s=adds_per_s, removes_per_s=removes_per_s, update_share=share,
                                         imbalance_after_update=addition.imbalance)
            print(f"  update: {share} removes at {removes_per_s:,.0f}/s (plan {removal.timings['plan_s']:.1f}s + "
                  f"remove_ids {removal.timings['remove_s']:.1f}s), {share} adds at {adds_per_s:,.0f}/s (plan "
                  f"{addition.timings['plan_s']:.1f}s + add {addition.timings['add_s']:.1f}s); imbalance after "
                  f"{addition.imbalance:.3f}; advice: {addition.advice or 'none'}")
            del loaded, removal, addition, contents, summary
        del result

    figures["points"] = [asdict(p) for p in points]
    figures["base_rss_mib"] = base_rss
    figures["peak_rss_mib"] = peak_rss_mib()
    met = [p for p in points if p.recall_at_k >= 0.95 and p.speedup >= 50]
    print(f"\nmemory: corpus arrays {base_rss:.0f} MiB RSS before indexing, peak RSS {peak_rss_mib():.0f} MiB")
    print("target recall@%d >= 0.95 at >= 50x exact QPS: %s" % (
        args.k, ", ".join(f"{p.factory} nprobe {p.nprobe} ({p.recall_at_k:.3f}, {p.speedup:.0f}x)" for p in met)
        if met else "not met"))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
