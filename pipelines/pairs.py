"""``i2i pairs``: Beam job turning related notes into the training pairs table.

Joins related rows with the notes table (rows with a missing note are counted and dropped),
keeps one row per unordered pair, and splits train/val by a seeded hash of the pair; with
``--test-since`` pairs of notes published at or after that time form the test split and those
notes never appear in train or val. DIR is the pairs table itself (Parquet parts plus
``_SUMMARY.json``), replaced atomically.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from i2i.core.cmdline import ArgumentParser, fraction, positive_int
from i2i.core.errors import InputError
from i2i.core.records import parse_timestamp_ms
from i2i.core.schemas import PAIRS
from pipelines.pair_table import (
    CANDIDATES,
    SplitConfig,
    assign_splits,
    drop_symmetric,
    join_notes,
    merge_lookups,
    notes_lookup,
)
from pipelines.paths import PARQUET_SUFFIXES, RunOutput, resolve_files
from pipelines.read import ReadParquetTable
from pipelines.runners import add_runner_arguments, job_options
from pipelines.sharding import split_by_shard
from pipelines.transforms import COUNTS, WriteCounts, WriteTable, concat

log = logging.getLogger(__name__)
COUNTS_FILE = "_counts.json"
RELATED_COLUMNS = ["src_note_id", "dst_note_id", "score"]
NOTES_COLUMNS = ["note_id", "published_at"]


class NotesLookup(beam.PTransform):
    """Notes tables -> one (note_id, published_ms) table, for use as a side input."""

    def expand(self, notes):
        return (
            notes
            | "PerTable" >> beam.Map(notes_lookup)
            | "Collect" >> beam.combiners.ToList()
            | "Merge" >> beam.Map(merge_lookups)
        )


class JoinWithNotes(beam.DoFn):
    def __init__(self, test_since_ms: int | None) -> None:
        self.test_since_ms = test_since_ms

    def process(self, related, notes):
        candidates, dropped = join_notes(related, notes, self.test_since_ms)
        yield beam.pvalue.TaggedOutput(COUNTS, ("related_rows", related.num_rows))
        yield beam.pvalue.TaggedOutput(COUNTS, ("missing_note_dropped", dropped))
        if candidates.num_rows:
            yield candidates


class JoinNotes(beam.PTransform):
    """Related tables + notes lookup -> {candidates: CANDIDATES tables, counts}."""

    def __init__(self, notes_lookup_pcoll, test_since_ms: int | None) -> None:
        super().__init__()
        self.notes = notes_lookup_pcoll
        self.test_since_ms = test_since_ms

    def expand(self, related):
        joined = related | "Join" >> beam.ParDo(
            JoinWithNotes(self.test_since_ms), beam.pvalue.AsSingleton(self.notes)).with_outputs(COUNTS, main="candidates")
        return {"candidates": joined["candidates"], COUNTS: joined[COUNTS]}


class DropSymmetricShard(beam.DoFn):
    def process(self, element):
        shard, tables = element
        kept, removed = drop_symmetric(concat(tables, CANDIDATES))
        yield beam.pvalue.TaggedOutput(COUNTS, ("symmetric_dropped", removed))
        yield shard, kept


class DropSymmetric(beam.PTransform):
    """Candidates -> {pairs: (shard, one row per unordered pair), counts}; both rows of a pair meet in one shard."""

    def __init__(self, shards: int) -> None:
        super().__init__()
        self.shards = shards

    def expand(self, candidates):
        shards = self.shards
        deduped = (
            candidates
            | "ByPairShard" >> beam.FlatMap(lambda table: split_by_shard(table, "pair_low", shards))
            | "GroupPairs" >> beam.GroupByKey()
            | "Dedup" >> beam.ParDo(DropSymmetricShard()).with_outputs(COUNTS, main="pairs")
        )
        return {"pairs": deduped["pairs"], COUNTS: deduped[COUNTS]}


class AssignShardSplits(beam.DoFn):
    def __init__(self, config: SplitConfig) -> None:
        self.config = config

    def process(self, element):
        shard, candidates = element
        pairs, counts = assign_splits(candidates, self.config)
        for name, value in counts.items():
            yield beam.pvalue.TaggedOutput(COUNTS, (name, value))
        yield shard, pairs


class AssignSplits(beam.PTransform):
    """(shard, candidates) -> {pairs: (shard, PAIRS table), counts}."""

    def __init__(self, config: SplitConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, candidates):
        split = candidates | "Split" >> beam.ParDo(AssignShardSplits(self.config)).with_outputs(COUNTS, main="pairs")
        return {"pairs": split["pairs"], COUNTS: split[COUNTS]}


@dataclass
class PairsJob:
    """One ``i2i pairs`` run, typed: what the command line's options say (see ``i2i pairs --help``)."""

    related: str
    notes: str
    out: str
    val_fraction: float = 0.1
    seed: int = 0
    test_since: str | None = None  # ISO-8601 time or epoch ms
    shards: int = 16
    beam_args: list[str] = field(default_factory=list)  # Beam pipeline options, e.g. --runner=FlinkRunner
    dask_address: str | None = None  # with --runner=dask: the scheduler to join (else a LocalCluster)
    dask_workers: int | None = None  # with --runner=dask and no address: the LocalCluster's workers


def parser() -> ArgumentParser:
    p = ArgumentParser(
        allow_abbrev=False,  # a prefix of our options goes to Beam unchanged
        prog="i2i pairs",
        description="Training pairs (train/val/test) from related notes and the notes table. "
        "Unknown options are Beam pipeline options (--runner, --direct_num_workers, Flink/Dataflow options); "
        "--runner=dask runs on a Dask cluster.",
    )
    p.add_argument("--related", required=True,
                   help="related table (directory, file or glob), or an 'i2i cooccur' output directory")
    p.add_argument("--notes", required=True, help="notes table (directory, .parquet file or glob)")
    p.add_argument("--out", required=True, help="pairs table directory (replaced atomically)")
    p.add_argument("--val-fraction", type=fraction, default=PairsJob.val_fraction, help="share of train/val pairs put in val")
    p.add_argument("--seed", type=int, default=PairsJob.seed, help="seed of the train/val hash")
    p.add_argument("--test-since", help="ISO-8601 time or epoch ms: pairs of notes published at or after it form the test split")
    p.add_argument("--shards", type=positive_int, default=PairsJob.shards, help="tables per shuffle")
    add_runner_arguments(p)
    return p


def _check_columns(path: str, columns: list[str], what: str) -> None:
    with FileSystems.open(path) as handle:
        names = pq.ParquetFile(handle).schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"{what} file {path} lacks column(s): {', '.join(missing)}")


def resolve_related(path: str) -> list[str]:
    nested = FileSystems.join(path.rstrip("/"), "related")
    if FileSystems.exists(nested) and FileSystems.exists(FileSystems.join(path.rstrip("/"), "_SUMMARY.json")):
        path = nested
    return resolve_files(path, PARQUET_SUFFIXES, "related")


def build(pipeline: beam.Pipeline, related_files: list[str], notes_files: list[str], output: RunOutput,
          config: SplitConfig, shards: int) -> None:
    related = pipeline | "ReadRelated" >> ReadParquetTable(related_files, RELATED_COLUMNS)
    notes = pipeline | "ReadNotes" >> ReadParquetTable(notes_files, NOTES_COLUMNS) | "NotesLookup" >> NotesLookup()
    joined = related | "JoinNotes" >> JoinNotes(notes, config.test_since_ms)
    deduped = joined["candidates"] | "DropSymmetric" >> DropSymmetric(shards)
    split = deduped["pairs"] | "AssignSplits" >> AssignSplits(config)
    written = split["pairs"] | "WritePairs" >> WriteTable(output.staging, PAIRS, "pairs")
    (
        [joined[COUNTS], deduped[COUNTS], split[COUNTS], written]
        | "AllCounts" >> beam.Flatten()
        | "WriteCounts" >> WriteCounts(output.staged(COUNTS_FILE))
    )


def job_from_argv(argv: list[str] | None) -> PairsJob:
    """The typed job from the command line's options; unknown options are Beam's."""
    args, beam_args = parser().parse_known_args(argv)
    return PairsJob(args.related, args.notes, args.out, args.val_fraction, args.seed, args.test_since, args.shards,
                    beam_args, args.dask_address, args.dask_workers)


def run(job: PairsJob | list[str] | None = None) -> dict:
    """Runs the job; returns the summary written to DIR/_SUMMARY.json (an argv list is parsed first)."""
    if not isinstance(job, PairsJob):
        job = job_from_argv(job)
    test_since_ms = None
    if job.test_since is not None:
        try:
            test_since_ms = parse_timestamp_ms(job.test_since)
        except (ValueError, OverflowError) as exc:
            raise InputError(f"--test-since: cannot read {job.test_since!r} as a time ({exc})") from exc
    config = SplitConfig(job.val_fraction, job.seed, test_since_ms)
    started = time.time()
    related_files = resolve_related(job.related)
    notes_files = resolve_files(job.notes, PARQUET_SUFFIXES, "notes")
    _check_columns(related_files[0], RELATED_COLUMNS, "related")
    _check_columns(notes_files[0], NOTES_COLUMNS, "notes")
    with RunOutput.staged_run(job.out) as output:
        with job_options(job, job.beam_args) as options:
            pipeline = beam.Pipeline(options=options)
            build(pipeline, related_files, notes_files, output, config, job.shards)
            pipeline.run().wait_until_finish()
        finished = time.time()
        output.ensure_table("", PAIRS)
        counts = output.take_json(COUNTS_FILE)
        summary = {
            "job": "pairs",
            "related": job.related,
            "notes": job.notes,
            "out": job.out,
            "config": {"val_fraction": job.val_fraction, "seed": job.seed, "test_since": job.test_since,
                       "test_since_ms": test_since_ms, "shards": job.shards},
            "counts": {name: int(counts.get(name, 0)) for name in
                       ("related_rows", "missing_note_dropped", "symmetric_dropped", "mixed_dropped",
                        "pairs", "train", "val", "test")},
            "timings_s": {"pipeline": round(finished - started, 3)},
        }
        summary["timings_s"]["total"] = round(time.time() - started, 3)
        output.publish(summary)
    return summary


def format_summary(summary: dict) -> str:
    c = summary["counts"]
    return (
        f"pairs: {c['related_rows']} related rows -> {c['pairs']} pairs (train {c['train']}, val {c['val']}, "
        f"test {c['test']}); dropped: {c['missing_note_dropped']} missing note, {c['symmetric_dropped']} symmetric, "
        f"{c['mixed_dropped']} mixing test and older notes; {summary['timings_s']['total']:.1f}s\n"
        f"  output: {summary['out']} (+ _SUMMARY.json)"
    )


def main(argv: list[str] | None = None) -> int:
    summary = run(job_from_argv(list(sys.argv[1:] if argv is None else argv)))
    print(format_summary(summary))
    return 0
