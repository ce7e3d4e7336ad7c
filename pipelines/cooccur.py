"""``i2i cooccur``: Beam job for co-occurrence scores and related notes (paper eq. 2).

Writes DIR/scores, DIR/related, DIR/dead_letter and DIR/_SUMMARY.json; the whole directory is
replaced in one step when the job succeeds, and left as it was when the job fails.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import apache_beam as beam

from i2i.core.cmdline import ArgumentParser, non_negative_float, positive_int
from i2i.core.errors import InputError
from i2i.core.schemas import DEAD_LETTER, RELATED, SCORES
from pipelines.paths import RunOutput, resolve_event_files
from pipelines.read import COUNTS, DEAD_LETTER as DEAD_TAG, EVENTS_TAG, ReadEvents
from pipelines.runners import add_runner_arguments, job_options
from pipelines.transforms import CombineScores, CooccurConfig, SelectRelated, UserPairPartials, WriteCounts, WriteTable

log = logging.getLogger(__name__)
COUNTS_FILE = "_counts.json"


@dataclass
class CooccurJob:
    """One ``i2i cooccur`` run, typed: what the command line's options say (see ``i2i cooccur --help``)."""

    events: str
    out: str
    date: str | None = None
    config: CooccurConfig = field(default_factory=CooccurConfig)
    validate_each_record: bool = False
    beam_args: list[str] = field(default_factory=list)  # Beam pipeline options, e.g. --runner=FlinkRunner
    dask_address: str | None = None  # with --runner=dask: the scheduler to join (else a LocalCluster)
    dask_workers: int | None = None  # with --runner=dask and no address: the LocalCluster's workers


def parser() -> ArgumentParser:
    defaults = CooccurConfig()
    p = ArgumentParser(
        allow_abbrev=False,  # a prefix of our options goes to Beam unchanged
        prog="i2i cooccur",
        description="Co-occurrence scores (paper eq. 2) and top-t related notes from an events table. "
        "Unknown options are Beam pipeline options (--runner, --direct_num_workers, Flink/Dataflow options); "
        "--runner=dask runs on a Dask cluster.",
    )
    p.add_argument("--events", required=True,
                   help="events: a .parquet/.jsonl file, a dt= partition, a table directory or a glob")
    p.add_argument("--date", help="YYYY-MM-DD: read only the dt=<date> partition under --events")
    p.add_argument("--out", required=True, help="run output directory (replaced atomically)")
    p.add_argument("--window-seconds", type=non_negative_float, default=defaults.window_seconds)
    p.add_argument("--up", type=non_negative_float, default=defaults.up, help="drop scores above this")
    p.add_argument("--low", type=non_negative_float, default=defaults.low, help="drop scores below this")
    p.add_argument("--top-t", type=positive_int, default=defaults.top_t, help="related notes kept per note")
    p.add_argument("--max-events-per-user", type=positive_int, default=defaults.max_events_per_user,
                   help="keep only each user's latest N events")
    p.add_argument("--validate-each-record", action="store_true",
                   help="call parse_event on every Parquet row instead of once per distinct value (slower, same result)")
    p.add_argument("--shards", type=positive_int, default=defaults.shards,
                   help="tables per shuffle (parallelism of the pair and score steps)")
    add_runner_arguments(p)
    return p


def build(pipeline: beam.Pipeline, files: list[str], output: RunOutput, config: CooccurConfig,
          per_record: bool = False) -> None:
    """Adds the whole job to ``pipeline``, writing into the staging directory of ``output``."""
    read = pipeline | "ReadEvents" >> ReadEvents(files, per_record=per_record)
    pairs = read[EVENTS_TAG] | "UserPairs" >> UserPairPartials(config)
    scores = pairs["partials"] | "CombineScores" >> CombineScores()
    related = scores | "SelectRelated" >> SelectRelated(config.up, config.low, config.top_t)
    written = [
        scores | "WriteScores" >> WriteTable(output.staged("scores"), SCORES, "pairs"),
        related | "WriteRelated" >> WriteTable(output.staged("related"), RELATED, "related_rows"),
        read[DEAD_TAG] | "WriteDeadLetter" >> WriteTable(output.staged("dead_letter"), DEAD_LETTER, "dead_letter_rows"),
    ]
    (
        [read[COUNTS], pairs[COUNTS], *written]
        | "AllCounts" >> beam.Flatten()
        | "WriteCounts" >> WriteCounts(output.staged(COUNTS_FILE))
    )


def check_event_counts(counts: dict) -> None:
    """Every valid event must reach the pair step (kept or dropped by the cap); a runner that lost
    elements in a shuffle fails the job here, before the output is published."""
    valid, kept, capped = (int(counts.get(name, 0)) for name in ("valid", "kept_events", "capped_events"))
    if kept + capped != valid:
        raise RuntimeError(f"the runner lost events between reading and pairing: {valid} valid, but "
                           f"{kept} kept + {capped} dropped by the cap = {kept + capped}; output not published")


def job_from_argv(argv: list[str] | None) -> CooccurJob:
    """The typed job from the command line's options; unknown options are Beam's."""
    args, beam_args = parser().parse_known_args(argv)
    config = CooccurConfig(args.window_seconds, args.up, args.low, args.top_t, args.max_events_per_user, args.shards)
    return CooccurJob(args.events, args.out, args.date, config, args.validate_each_record, beam_args,
                      args.dask_address, args.dask_workers)


def run(job: CooccurJob | list[str] | None = None) -> dict:
    """Runs the job; returns the summary written to DIR/_SUMMARY.json (an argv list is parsed first)."""
    if not isinstance(job, CooccurJob):
        job = job_from_argv(job)
    config = job.config
    if config.low > config.up:
        raise InputError(f"--low ({config.low}) is above --up ({config.up})")
    started = time.time()
    files = resolve_event_files(job.events, job.date)
    with RunOutput.staged_run(job.out) as output:
        log.info("cooccur: %d event files -> %s", len(files), job.out)
        with job_options(job, job.beam_args) as options:
            pipeline = beam.Pipeline(options=options)
            build(pipeline, files, output, config, job.validate_each_record)
            pipeline.run().wait_until_finish()
        finished = time.time()
        for name, schema in (("scores", SCORES), ("related", RELATED), ("dead_letter", DEAD_LETTER)):
            output.ensure_table(name, schema)
        counts = output.take_json(COUNTS_FILE)
        check_event_counts(counts)
        summary = {
            "job": "cooccur",
            "events": job.events,
            "date": job.date,
            "files": len(files),
            "out": job.out,
            "config": {"window_seconds": config.window_seconds, "up": config.up, "low": config.low,
                       "top_t": config.top_t, "max_events_per_user": config.max_events_per_user,
                       "shards": config.shards, "validate_each_record": job.validate_each_record},
            "counts": {name: int(counts.get(name, 0)) for name in
                       ("input", "valid", "dead_lettered", "users", "capped_users", "kept_events",
                        "capped_events", "user_pairs", "pairs", "related_rows")},
            "timings_s": {"pipeline": round(finished - started, 3)},
        }
        summary["timings_s"]["total"] = round(time.time() - started, 3)
        output.publish(summary)
    return summary


def format_summary(summary: dict) -> str:
    c = summary["counts"]
    return (
        f"cooccur: {c['input']} records ({c['valid']} valid, {c['dead_lettered']} dead-lettered) from "
        f"{summary['files']} files; {c['users']} users ({c['capped_users']} capped); {c['pairs']} scored pairs, "
        f"{c['related_rows']} related rows in {summary['timings_s']['total']:.1f}s\n"
        f"  outputs: {summary['out']}/scores, {summary['out']}/related, {summary['out']}/dead_letter, "
        f"{summary['out']}/_SUMMARY.json"
    )


def main(argv: list[str] | None = None) -> int:
    summary = run(job_from_argv(list(sys.argv[1:] if argv is None else argv)))
    print(format_summary(summary))
    return 0
