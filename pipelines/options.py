"""Command-line handling shared by the Beam jobs: our options first, the rest go to Beam unchanged."""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from i2i.core.errors import InputError

DEFAULT_RUNNER = "DirectRunner"


class ArgumentParser(argparse.ArgumentParser):
    """Raises InputError instead of exiting, so the ``i2i`` CLI prints one line and exits 2.

    Prefixes of our options are not expanded: such an argument goes to Beam unchanged.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def beam_options(beam_args: list[str]) -> PipelineOptions:
    """Pipeline options from the pass-through arguments; the local runner unless one is named."""
    options = PipelineOptions(beam_args)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
