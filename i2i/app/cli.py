"""The ``i2i`` console script: one entry point that dispatches to each part's own ``main(argv)``.

Subcommands import lazily, so ``i2i --help`` stays fast.
"""
from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass

from i2i.core.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, I2IError, exit_code


@dataclass(frozen=True)
class Subcommand:
    target: str  # "module:function"; the function takes argv (list[str]) and returns an exit code
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "data": Subcommand("i2i.app.data.cli:main", "generate sample datasets: fashion-notes, movielens"),
    "cooccur": Subcommand("pipelines.cooccur:main", "Beam job: co-occurrence scores and related notes (paper eq. 2)"),
    "pairs": Subcommand("pipelines.pairs:main", "Beam job: training pairs with train/val/test splits"),
    "train": Subcommand("embedding.train_cli:main", "train the representation model into a checkpoint directory"),
    "embed": Subcommand("embedding.embed_cli:main", "batch job: embed notes into an embedding table"),
    "index": Subcommand("index.cli:main", "FAISS IVF index: build, update, rebuild, info, rollback"),
    "serve": Subcommand("recall_server.cli:serve_main", "gRPC recall server"),
    "recall": Subcommand("recall_server.cli:recall_main", "client: recall notes for a history from a server"),
    "eval": Subcommand("embedding.eval_cli:main",
                       "Recall@100/1k/10k on all, short-query and short-target pairs; 'eval replay': next-day replay"),
    "diagnose": Subcommand("embedding.diagnose_cli:main", "visual neglect: attention/saliency on image vs text, image-alone recall"),
    "demo": Subcommand("i2i.app.demo:main", "the whole pipeline end to end on generated sample data"),
    "run": Subcommand("i2i.app.daily:main", "the scheduled daily run for one date partition"),
}


PROJECT_LOGGERS = ("i2i", "pipelines", "embedding", "index", "recall_server")
# Import-time notices of optional cloud connectors that a local run never uses.
IGNORED_NOTICES = ("apitools not found", "bigquery_storage_v1")


class DropImportNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in IGNORED_NOTICES)


def configure_logging() -> None:
    """INFO from the project's own loggers, WARNING and above from libraries (Beam, faiss, grpc)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(DropImportNotices())
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: i2i <command> [options]   (i2i <command> --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


# Subcommands of the application layer nested under a part's command: ``i2i eval replay`` drives
# every part (data to server), so it lives in i2i.app rather than in embedding's evaluation.
NESTED: dict[tuple[str, str], str] = {("eval", "replay"): "i2i.app.replay.cli:main"}


def resolve(name: str, rest: list[str] | None = None):
    """Imports a subcommand's function, and the arguments it takes."""
    rest = list(rest or [])
    target = SUBCOMMANDS[name].target
    if rest and (name, rest[0]) in NESTED:
        target, rest = NESTED[(name, rest[0])], rest[1:]
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name), rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"i2i: error: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        function, rest = resolve(name, rest)
        return int(function(rest) or 0)
    except I2IError as exc:  # 2 bad input, 75 retry later, 1 failure
        print(f"i2i {name}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"i2i {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
