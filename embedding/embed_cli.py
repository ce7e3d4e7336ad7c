"""``i2i embed``: embed the notes an embedding table does not hold yet for a checkpoint's model version."""
from __future__ import annotations

import argparse

from embedding.embed_job import EmbedJobConfig, EmbedJobSummary, run_embed_job
from i2i.core.cmdline import ArgumentParser, positive_int
from i2i.core.errors import InputError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="i2i embed",
        description="Embed notes into an embedding table (parquet:DIR or redis://...). Only notes the table "
        "does not hold for the checkpoint's model version are embedded, unless --all. Writes go in "
        "chunks, so a killed run resumes where it stopped. Unknown options go to Beam with --beam.",
    )
    parser.add_argument("--notes", required=True, help="notes table (Parquet directory or file)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory from i2i train")
    parser.add_argument("--table", required=True,
                        help="parquet:DIR or redis://[:password@]host:port/db[?prefix=P&ttl=S&cluster=1]")
    parser.add_argument("--all", action="store_true", dest="all_notes",
                        help="re-embed every note, also those already in the table")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="notes per forward pass (default: 256 on a GPU, 32 on a CPU)")
    parser.add_argument("--chunk-size", type=positive_int, default=1024,
                        help="notes per table write, the most a crash can lose (1024)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available (bf16), else cpu")
    parser.add_argument("--dead-letter", default=None,
                        help="dead-letter table for bad notes (default: <notes>_embed_dead_letter beside the notes)")
    parser.add_argument("--compact", action=argparse.BooleanOptionalAction, default=None,
                        help="compact a Parquet table afterwards (default: when it has many part files)")
    parser.add_argument("--vision-cache", metavar="DIR", default=None,
                        help="directory of cached frozen vision-encoder features, shared by every checkpoint "
                        "with the same vision encoder (read and written; default: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--beam", action="store_true",
                        help="run as a Beam pipeline with RunInference (remaining options go to Beam; "
                        "--runner=DirectRunner unless one is named)")
    return parser


def run(config: EmbedJobConfig, beam_args: list[str] | None = None) -> EmbedJobSummary:
    """The embedding stage's one entry point: the local job, or the Beam pipeline when ``beam_args`` is a list."""
    if beam_args is None:
        return run_embed_job(config)
    if config.vision_cache:
        raise InputError("--vision-cache is for the local job; the Beam pipeline's workers keep no shared cache")
    from embedding.beam_embed import run_beam_embed

    return run_beam_embed(config, beam_args)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.beam:
        raise InputError(f"unrecognized arguments: {' '.join(beam_args)} (Beam options need --beam)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for, but no CUDA device is available")
    config = EmbedJobConfig(
        notes=args.notes, checkpoint=args.checkpoint, table=args.table, all_notes=args.all_notes,
        batch_size=args.batch_size, chunk_size=args.chunk_size, device=args.device,
        dead_letter=args.dead_letter, progress=not args.no_progress, compact=args.compact,
        vision_cache=args.vision_cache,
    )
    summary = run(config, beam_args if args.beam else None)
    print("\n".join(f"i2i embed: {line}" for line in summary.lines()))
    return 0
