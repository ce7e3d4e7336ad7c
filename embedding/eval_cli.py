"""``i2i eval``: Recall@100/1k/10k of a checkpoint, an embedding table or a baseline on one split.

The pool is every note of the notes table (``--pool all``), only the notes named by the split's
pairs (``--pool split``) or, the paper's protocol, every note published at or after a time
(``--pool-since T``: the test week's notes, disjoint from the training notes when the pairs were
made with ``i2i pairs --test-since T``). Each pair's query note is ranked against the pool without
itself and the target note's rank counts; every recall comes with a 95% bootstrap interval, and
``--compare-to`` gives the paired bootstrap difference against another evaluation's ranks.
"""
from __future__ import annotations

import json
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
    recall_key,
    resolve_pairs,
    write_result,
)
from i2i.core.cmdline import ArgumentParser
from i2i.core.errors import InputError
from i2i.core.io import atomic_file, read_table
from i2i.core.schemas import SPLITS, validate

log = logging.getLogger(__name__)

NOTE_COLUMNS = ("note_id", "title", "topics", "content", "image", "published_at")


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
    method.add_argument("--baseline", choices=BASELINES,
                        help="a baseline: bm25, minilm, image, random (the floor) or oracle (the latent-attribute ceiling)")
    parser.add_argument("--attributes", help="with --baseline oracle: the dataset's _attributes table "
                        "(default: _attributes beside the notes table)")
    parser.add_argument("--model-version", help="with --table: the model version to evaluate (default: the only one)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="pairs split to evaluate (default test)")
    parser.add_argument("--pool", default="all", choices=("all", "split"),
                        help="all: every note of the notes table (default); split: notes named by the split's pairs")
    parser.add_argument("--pool-since", metavar="TIME",
                        help="pool = notes published at or after TIME (ISO-8601 or epoch ms): the paper's test pool; "
                        "pairs with a note outside it are skipped and counted")
    parser.add_argument("--out", help="directory for metrics.json, metrics.md and ranks.parquet")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics JSON to PATH")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples of pairs for 95%% intervals (default 1000; 0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of --baseline random (default 0)")
    parser.add_argument("--compare-to", metavar="DIR",
                        help="an earlier --out DIR: paired bootstrap difference (this minus that) on the pairs both ranked")
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
    parser.add_argument("--vision-cache", metavar="DIR",
                        help="with --checkpoint: directory of cached frozen vision-encoder features, shared by "
                        "every checkpoint with the same vision encoder (read and written)")
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


def published_since(notes: list[dict], since: str) -> list[dict]:
    """Notes published at or after ``since`` (the paper's test pool)."""
    from i2i.core.records import parse_timestamp_ms

    try:
        since_ms = parse_timestamp_ms(int(since) if since.lstrip("-").isdigit() else since)
    except (ValueError, OverflowError) as exc:
        raise InputError(f"--pool-since: cannot read {since!r} as a time ({exc})") from exc
    if notes and "published_at" not in notes[0]:
        raise InputError("--pool-since needs a published_at column in the notes table")
    pool = [n for n in notes if n.get("published_at") is not None
            and parse_timestamp_ms(n["published_at"]) >= since_ms]
    if len(pool) < 2:
        raise InputError(f"--pool-since {since}: only {len(pool)} note(s) published at or after it")
    return pool


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
    encoder.use_vision_cache(args.vision_cache)
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


def load_attributes(args: EvalJob) -> pa.Table | None:
    if args.baseline != "oracle":
        return None
    path = Path(args.attributes) if args.attributes else Path(args.notes).parent / "_attributes"
    if not path.exists():
        raise InputError(f"the oracle needs the latent attributes table; not found: {path} (pass --attributes DIR)")
    return read_table(path)


def baseline_method(args: EvalJob, pool: list[dict]) -> Method:
    counter = default_counter() if args.tokens == "auto" else whitespace_counter()
    scorer = build_scorer(args.baseline, pool, args.device, progress=True, seed=args.seed,
                          attributes=load_attributes(args))
    return Method(args.name or args.baseline, scorer, pool, counter)


def write_ranks(path: Path, query_ids: list[str], target_ids: list[str], ranks: np.ndarray,
                query_tokens: np.ndarray, target_tokens: np.ndarray) -> None:
    """Per-pair ranks with both notes' token counts, so runs can be regrouped and averaged later."""
    table = pa.table({
        "query_note_id": pa.array(query_ids, pa.string()),
        "target_note_id": pa.array(target_ids, pa.string()),
        "rank": pa.array(ranks, pa.int64()),
        "query_tokens": pa.array(query_tokens, pa.int64()),
        "target_tokens": pa.array(target_tokens, pa.int64()),
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
    attributes: str | None = None
    pool_since: str | None = None
    json: str | None = None
    bootstrap: int = 1000
    seed: int = 0
    compare_to: str | None = None
    vision_cache: str | None = None


def main(argv: list[str]) -> int:
    run(EvalJob(**vars(build_parser().parse_args(argv))))
    return 0


def run(job: EvalJob) -> EvalResult:
    """The evaluation stage's one entry point: ranks the pool, prints and writes the result."""
    if sum(1 for method in (job.checkpoint, job.table, job.baseline) if method) != 1:
        raise InputError("name exactly one of --checkpoint, --table and --baseline")
    config = EvalConfig(ks=parse_ks(job.ks), short_tokens=job.short_tokens, long_tokens=job.long_tokens,
                        device=job.device, progress=True, bootstrap=job.bootstrap, seed=job.seed)
    if job.short_tokens <= 0 or job.long_tokens <= 0:
        raise InputError("--short-tokens and --long-tokens must be positive")
    if job.bootstrap < 0:
        raise InputError(f"--bootstrap must not be negative, got {job.bootstrap}")
    if job.vision_cache and not job.checkpoint:
        raise InputError("--vision-cache caches a checkpoint's vision features: use it with --checkpoint")
    if job.pool_since and job.pool != "all":
        raise InputError("--pool-since and --pool split choose the pool in two ways: give one")
    started = time.perf_counter()
    notes = load_notes(job.notes)
    pairs = load_pairs(job.pairs, job.split)
    if job.pool_since:
        pool = published_since(notes, job.pool_since)
    else:
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
    masks = pair_groups(tokens[positions.queries], tokens[positions.targets], config)
    query_ids = [pool_ids[i] for i in positions.queries]
    target_ids = [pool_ids[i] for i in positions.targets]
    if job.compare_to:
        result.extra["paired_difference"] = compare_to(Path(job.compare_to), query_ids, target_ids, ranks, masks,
                                                       result, config)
    result.extra.update({
        "pool": f"published since {job.pool_since}" if job.pool_since else job.pool,
        "missing_embeddings": method.missing_embeddings,
        "seconds_load": round(loaded - started, 3),
        "seconds_encode": round(encoded - loaded, 3),
    })
    print(result.to_markdown())
    if "paired_difference" in result.extra:
        print(format_differences(result.extra["paired_difference"]))

    outputs = []
    if job.json:
        from i2i.core.io import atomic_write_text

        outputs.append(atomic_write_text(job.json, json.dumps(result.to_json(), indent=2) + "\n"))
    if job.out:
        out = Path(job.out)
        outputs += list(write_result(result, out))
        ranks_path = out / "ranks.parquet"
        write_ranks(ranks_path, query_ids, target_ids, ranks, tokens[positions.queries], tokens[positions.targets])
        outputs.append(ranks_path)
    if job.plot:
        curves = {name: ranks[mask] for name, mask in masks.items()}
        outputs.append(plot_recall_curves(curves, result.candidates, job.plot, f"{method.name} — {job.split}"))
    print_summary(result, time.perf_counter() - started, outputs)
    return result


def compare_to(other_dir: Path, query_ids: list[str], target_ids: list[str], ranks: np.ndarray,
               masks: dict[str, np.ndarray], result: EvalResult, config: EvalConfig) -> dict:
    """Paired bootstrap of (this recall - the other's) per group and k, on the pairs both ranked."""
    from embedding.bootstrap import hits, paired_difference

    path = other_dir / "ranks.parquet"
    if not path.exists():
        raise InputError(f"--compare-to: {path} not found (an i2i eval --out DIR holds it)")
    other = pq.read_table(path)
    other_rank = {(q, t): r for q, t, r in zip(other.column("query_note_id").to_pylist(),
                                               other.column("target_note_id").to_pylist(),
                                               other.column("rank").to_pylist())}
    found = np.array([(q, t) in other_rank for q, t in zip(query_ids, target_ids)])
    theirs = np.array([other_rank.get((q, t), 0) for q, t in zip(query_ids, target_ids)], dtype=np.int64)
    other_name = json.loads((other_dir / "metrics.json").read_text())["method"] if (other_dir / "metrics.json").exists() \
        else str(other_dir)
    groups = {}
    for name, mask in masks.items():
        selected = mask & found
        groups[name] = {}
        for k in config.ks:
            at = min(k, result.candidates)
            diff = paired_difference(hits(ranks[selected], at), hits(theirs[selected], at), config.bootstrap or 1000,
                                     config.seed)
            groups[name][recall_key(k)] = diff.to_json() if diff else None
    return {"a": result.method, "b": other_name, "pairs_compared": int(found.sum()),
            "pairs_missing_in_b": int((~found).sum()), "groups": groups}


def format_differences(comparison: dict) -> str:
    lines = [f"Paired difference {comparison['a']} - {comparison['b']} on {comparison['pairs_compared']} pairs "
             f"(95% bootstrap interval, p two-sided):"]
    for group, by_k in comparison["groups"].items():
        cells = []
        for key, diff in by_k.items():
            if diff:
                d = diff["difference"]
                cells.append(f"{key} {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] p={diff['p_value']:.3f}")
        lines.append(f"  {group}: " + ("; ".join(cells) if cells else "—"))
    return "\n".join(lines)


def print_summary(result: EvalResult, seconds: float, outputs: list) -> None:
    extra = result.extra
    print(
        f"i2i eval: {result.method} on split {result.split}: {result.pairs} pairs ranked against a pool of "
        f"{result.pool_size} notes ({result.skipped_pairs} pairs skipped) in {seconds:.1f}s "
        f"(load {extra['seconds_load']:.1f}s, encode {extra['seconds_encode']:.1f}s, rank {result.seconds:.1f}s)"
    )
    for path in outputs:
        print(f"  wrote {path}")
