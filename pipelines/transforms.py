"""Composite transforms of the co-occurrence job; each works on PCollections of Arrow tables.

Shuffles move whole tables keyed by a shard number (a stable hash of the user, or of the source
note), so a runner groups a few hundred elements rather than one element per (user, A, B).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from i2i.core.schemas import EVENTS
from pipelines.arrays import compact_dictionaries
from pipelines.cooccurrence import PARTIALS, PairBlockLimits, exact_scores, top_related, user_pair_partials
from pipelines.paths import write_parquet
from pipelines.sharding import split_by_shard

log = logging.getLogger(__name__)
COUNTS = "counts"


@dataclass(frozen=True)
class CooccurConfig:
    """Options of paper eq. 2 and of the job's parallelism (defaults from CONTRACTS.md)."""

    window_seconds: float = 86400.0
    up: float = 30.0
    low: float = 0.01
    top_t: int = 3
    max_events_per_user: int = 1000
    shards: int = 16  # tables per shuffle; raise it with the data size and the number of workers
    max_candidates: int = 4_000_000  # memory bound: candidate pairs expanded at a time


def concat(tables, schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) if not t.schema.equals(schema) else t for t in tables])


class ComputeUserPairs(beam.DoFn):
    """All events of one user shard -> (source shard, partial sums); ``counts`` per shard."""

    def __init__(self, config: CooccurConfig) -> None:
        self.config = config

    def process(self, element):
        shard, tables = element
        events = concat(tables, EVENTS)
        partials, stats = user_pair_partials(events, self.config.window_seconds, self.config.max_events_per_user,
                                             PairBlockLimits(self.config.max_candidates))
        log.info("user shard %d: %d users, %d events, %d pair memberships", shard, stats.users,
                 stats.kept_events, stats.user_pairs)
        for name, value in stats.as_counts().items():
            yield beam.pvalue.TaggedOutput(COUNTS, (name, value))
        yield from _compacted_pieces(partials, self.config.shards)


def _compacted_pieces(partials: pa.Table, shards: int):
    """(source shard, piece) with each piece's dictionaries cut down to the ids it uses."""
    for shard, piece in split_by_shard(partials, "src_note_id", shards):
        yield shard, compact_dictionaries(piece)


class UserPairPartials(beam.PTransform):
    """Events tables -> {partials: (source shard, PARTIALS table), counts: (name, n)}.

    Events are regrouped so each user's events meet in one table; pairs are computed there.
    """

    def __init__(self, config: CooccurConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, events):
        shards = self.config.shards
        computed = (
            events
            | "ByUserShard" >> beam.FlatMap(lambda table: split_by_shard(table, "user_id", shards))
            | "GroupUsers" >> beam.GroupByKey()
            | "Pairs" >> beam.ParDo(ComputeUserPairs(self.config)).with_outputs(COUNTS, main="partials")
        )
        return {"partials": computed["partials"], COUNTS: computed[COUNTS]}


class CombineScores(beam.PTransform):
    """(source shard, partials) -> (source shard, SCORES table) with every pair of its source notes."""

    def expand(self, partials):
        return (
            partials
            | "GroupSources" >> beam.GroupByKey()
            | "Score" >> beam.MapTuple(lambda shard, tables: (shard, exact_scores(concat(tables, PARTIALS))))
        )


class SelectRelated(beam.PTransform):
    """(shard, scores) -> (shard, RELATED table): bounds, then top-t per source note.

    Each input table must hold every pair of its source notes, as ``CombineScores`` produces.
    """

    def __init__(self, up: float, low: float, top_t: int) -> None:
        super().__init__()
        self.up, self.low, self.top_t = up, low, top_t

    def expand(self, scores):
        up, low, top_t = self.up, self.low, self.top_t
        return scores | "TopT" >> beam.MapTuple(lambda shard, table: (shard, top_related(table, up, low, top_t)))


class WriteTableParts(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema, count_name: str) -> None:
        self.directory, self.schema, self.count_name = directory, schema, count_name

    def process(self, element):
        part, table = element
        name = f"part-{part:05d}.parquet" if isinstance(part, int) else f"part-{part}.parquet"
        write_parquet(FileSystems.join(self.directory, name), table.cast(self.schema))
        yield (self.count_name, table.num_rows)


class WriteTable(beam.PTransform):
    """(part, table) -> one Parquet file per part under ``directory``; returns (count_name, rows).

    Part names are deterministic, so a retried bundle overwrites its own file.
    """

    def __init__(self, directory: str, schema: pa.Schema, count_name: str) -> None:
        super().__init__()
        self.directory, self.schema, self.count_name = directory, schema, count_name

    def expand(self, tables):
        return tables | "Write" >> beam.ParDo(WriteTableParts(self.directory, self.schema, self.count_name))


def _write_json(counts: dict, path: str) -> str:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(counts, sort_keys=True).encode("utf-8"))
    return path


class SumCounts(beam.CombineFn):
    """(name, n) elements -> {name: sum of n}; one global combine (lifted before the shuffle)."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, element) -> dict:
        name, value = element
        accumulator[name] = accumulator.get(name, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for accumulator in accumulators:
            for name, value in accumulator.items():
                merged[name] = merged.get(name, 0) + value
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


class WriteCounts(beam.PTransform):
    """(name, n) elements -> their sums as one JSON object at ``path`` (exact under retries)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, counts):
        path = self.path
        return (
            counts
            | "Sum" >> beam.CombineGlobally(SumCounts())
            | "Write" >> beam.Map(_write_json, path)
        )
