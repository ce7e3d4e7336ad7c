"""``i2i eval``: Recall@100/1k/10k of a checkpoint, an embedding table or a baseline on one split.

The pool is every note of the notes table (``--pool all``, the default, for every split) or only
the notes named by the split's pairs (``--pool split``, closest to the paper's test pool). Each
pair's query note is ranked against the pool without itself and the target note's rank counts.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedding.baselines import BASELINES, build_scorer
from embedding.baselines.tokens import TokenCounter, default_counter, encoder_counter, whitespace_counter
from embedding.evaluation import (
    DenseScorer,
    EvalConfig,
    EvalResult,
    Scorer,
    evaluate,
    pair_groups,
    plot_recall_curves,
    resolve_pairs,
    write_result,
)
from i2i.core.cmdline import ArgumentParser
from i2i.core.errors import InputError
from i2i.core.io import atomic_file, read_table
from i2i.core.schemas import SPLITS, validate

log = logging.getLogger(__name__)

NOTE_COLUMNS = ("note_id", "title", "topics", "content", "image")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="i2i eval",
        description="Rank the whole note pool for each query note of a split (exact search) and report "
        "Recall@k on all, short-query, short-target, long-query and long-target pairs.",
    )
    parser.add_argument("--notes", required=True, help="notes table (directory or .parquet file)")
    parser.add_argument("--pairs", required=True, help="pairs table (query_note_id, target_note_id, score, split)")
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument("--checkpoint", help="checkpoint directory from i2i train (trained or untrained = zero-shot)")
    method.add_argument("--table", help="embedding table: parquet:DIR or redis://host:port/db")
    method.add_argument("--baseline", choices=BASELINES, help="a baseline: bm25, minilm or image")
    parser.add_argument("--model-version", help="with --table: the model version to evaluate (default: the only one)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="pairs split to evaluate (default test)")
    parser.add_argument("--pool", default="all", choices=("all", "split"),
                        help="all: every note of the notes table (default); split: notes named by the split's pairs")
    parser.add_argument("--out", help="directory for metrics.json, metrics.md and ranks.parquet")
    parser.add_argument("--plot", help="PNG file: recall against k for each pair group")
    parser.add_argument("--short-tokens", type=int, default=50, help="short note: fewer tokens than this (default 50)")
    parser.add_argument("--long-tokens", type=int, default=165, help="long note: more tokens than this (default 165)")
    parser.add_argument("--ks", default="100,1000,10000", help="comma-separated k values (default 100,1000,10000)")
    parser.add_argument("--tokens", default="auto", choices=("auto", "whitespace"),
                        help="token counter for short/long: auto = the checkpoint's tokenizer, or SmolLM2-135M "
                        "for baselines and tables (whitespace words if not installed); whitespace = words")
    parser.add_argument("--name", help="method name shown in the results (default from the method)")
    parser.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="notes per encoding batch (default: 256 on a GPU, 32 on a CPU)")
    return parser


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise InputError(f"--ks must be comma-separated integers, got {text!r}") from exc
    if not ks or ks[0] <= 0:
        raise InputError(f"--ks must be positive integers, got {text!r}")
    return ks


def load_notes(path: str) -> list[dict]:
    """Note rows as dicts; only note_id is required (text-only tables may lack image)."""
    table = read_table(path)
    if "note_id" not in table.column_names:
        raise InputError(f"notes table {path} has no note_id column")
    report = validate(table, "notes")
    errors = [e for e in report.errors if not (e.reason == "missing column" and e.field != "note_id")]
    if errors:
        raise InputError(f"notes table {path}: " + "; ".join(map(str, errors)))
    if table.num_rows == 0:
        raise InputError(f"notes table {path} is empty")
    return table.select([c for c in NOTE_COLUMNS if c in table.column_names]).to_pylist()


def load_pairs(path: str, split: str) -> pa.Table:
    table = read_table(path)
    report = validate(table, "pairs")
    if not report.ok:
        raise InputError(f"pairs table {path}: {report}")
    selected = table.filter(pc.equal(table.column("split"), split))
    if selected.num_rows == 0:
        present = sorted(set(table.column("split").to_pylist()))
        raise InputError(f"pairs table {path} has no pairs of split {split!r} (splits present: {present or 'none'})")
    return selected


def restrict_pool(notes: list[dict], pairs: pa.Table) -> list[dict]:
    named = set(pairs.column("query_note_id").to_pylist()) | set(pairs.column("target_note_id").to_pylist())
    return [note for note in notes if note["note_id"] in named]


@dataclass
class Method:
    """What ranks the pool, on which notes (a table may lack some), and how tokens are counted."""

    name: str
    scorer: Scorer
    pool: list[dict]
    counter: TokenCounter
    missing_embeddings: int = 0


def checkpoint_method(args: EvalJob, pool: list[dict]) -> Method:
    try:
        from embedding.checkpoint import load_encoder
    except ModuleNotFoundError as exc:
        raise InputError("checkpoint evaluation needs embedding.checkpoint, which is not installed") from exc
    if not Path(args.checkpoint).is_dir():
        raise InputError(f"checkpoint directory not found: {args.checkpoint}")
    encoder = load_encoder(args.checkpoint, device=args.device)
    vectors = encoder.encode(pool, batch_size=args.batch_size, progress=True)
    name = args.name or f"{Path(args.checkpoint).name} ({encoder.model_version[:12]})"
    counter = encoder_counter(encoder) if args.tokens == "auto" else whitespace_counter()
    return Method(name, DenseScorer(np.asarray(vectors, dtype=np.float32), args.device), pool, counter)


def table_method(args: EvalJob, pool: list[dict]) -> Method:
    from embedding.table import open_table

    with open_table(args.table) as table:
        version = args.model_version
        if version is None:
            versions = table.model_versions()
            if len(versions) != 1:
                raise InputError(f"embedding table {args.table} holds model versions {versions or 'none'}: "
                                 "choose one with --model-version")
            version = versions[0]
        table.require_model_version(version)
        lookup = table.get_many([note["note_id"] for note in pool], version)
    found = set(lookup.found_ids)
    by_id = {note["note_id"]: note for note in pool}
    kept = [by_id[note_id] for note_id in lookup.found_ids]
    if len(found) < len(pool):
        log.warning("%d pool notes have no embedding for %s and are left out of the pool", len(pool) - len(found), version)
    counter = default_counter() if args.tokens == "auto" else whitespace_counter()
    name = args.name or f"table {version[:12]}"
    return Method(name, DenseScorer(lookup.vectors, args.device), kept, counter, len(pool) - len(found))


def baseline_method(args: EvalJob, pool: list[dict]) -> Method:
    counter = default_counter() if args.tokens == "auto" else whitespace_counter()
    return Method(args.name or args.baseline, build_scorer(args.baseline, pool, args.device, progress=True), pool, counter)


def write_ranks(path: Path, query_ids: list[str], target_ids: list[str], ranks: np.ndarray) -> None:
    table = pa.table({
        "query_note_id": pa.array(query_ids, pa.string()),
        "target_note_id": pa.array(target_ids, pa.string()),
        "rank": pa.array(ranks, pa.int64()),
    })
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


@dataclass
class EvalJob:
    """One ``i2i eval`` run, typed: the command line's options; exactly one of checkpoint, table, baseline."""

    notes: str
    pairs: str
    checkpoint: str | None = None
    table: str | None = None
    baseline: str | None = None
    model_version: str | None = None
    split: str = "test"
    pool: str = "all"
    out: str | None = None
    plot: str | None = None
    short_tokens: int = 50
    long_tokens: int = 165
    ks: str = "100,1000,10000"
    tokens: str = "auto"
    name: str | None = None
    device: str | None = None
    batch_size: int | None = None


def main(argv: list[str]) -> int:
    run(EvalJob(**vars(build_parser().parse_args(argv))))
    return 0


def run(job: EvalJob) -> EvalResult:
    """The evaluation stage's one entry point: ranks the pool, prints and writes the result."""
    if sum(1 for method in (job.checkpoint, job.table, job.baseline) if method) != 1:
        raise InputError("name exactly one of --checkpoint, --table and --baseline")
    config = EvalConfig(ks=parse_ks(job.ks), short_tokens=job.short_tokens, long_tokens=job.long_tokens,
                        device=job.device, progress=True)
    if job.short_tokens <= 0 or job.long_tokens <= 0:
        raise InputError("--short-tokens and --long-tokens must be positive")
    started = time.perf_counter()
    notes = load_notes(job.notes)
    pairs = load_pairs(job.pairs, job.split)
    pool = notes if job.pool == "all" else restrict_pool(notes, pairs)
    loaded = time.perf_counter()

    if job.checkpoint:
        method = checkpoint_method(job, pool)
    elif job.table:
        method = table_method(job, pool)
    else:
        method = baseline_method(job, pool)
    encoded = time.perf_counter()

    pool_ids = [note["note_id"] for note in method.pool]
    positions = resolve_pairs(pool_ids, pairs.column("query_note_id").to_pylist(), pairs.column("target_note_id").to_pylist())
    tokens = method.counter.lengths(method.pool)
    result, ranks = evaluate(method.name, job.split, method.scorer, positions, tokens, method.counter.name, config)
    result.extra.update({
        "pool": job.pool,
        "missing_embeddings": method.missing_embeddings,
        "seconds_load": round(loaded - started, 3),
        "seconds_encode": round(encoded - loaded, 3),
    })
    print(result.to_markdown())

    outputs = []
    if job.out:
        out = Path(job.out)
        outputs += list(write_result(result, out))
        ranks_path = out / "ranks.parquet"
        write_ranks(ranks_path, [pool_ids[i] for i in positions.queries], [pool_ids[i] for i in positions.targets], ranks)
        outputs.append(ranks_path)
    if job.plot:
        masks = pair_groups(tokens[positions.queries], tokens[positions.targets], config)
        curves = {name: ranks[mask] for name, mask in masks.items()}
        outputs.append(plot_recall_curves(curves, result.candidates, job.plot, f"{method.name} — {job.split}"))
    print_summary(result, time.perf_counter() - started, outputs)
    return result


def print_summary(result: EvalResult, seconds: float, outputs: list) -> None:
    extra = result.extra
    print(
        f"i2i eval: {result.method} on split {result.split}: {result.pairs} pairs ranked against a pool of "
        f"{result.pool_size} notes ({result.skipped_pairs} pairs skipped) in {seconds:.1f}s "
        f"(load {extra['seconds_load']:.1f}s, encode {extra['seconds_encode']:.1f}s, rank {result.seconds:.1f}s)"
    )
    for path in outputs:
        print(f"  wrote {path}")
