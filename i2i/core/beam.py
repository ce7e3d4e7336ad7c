"""Beam pipeline options shared by every Beam job (co-occurrence, pairs, the Beam embedding job)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = "DirectRunner"


def beam_options(beam_args: list[str] | None = None) -> "PipelineOptions":
    """Pipeline options from the pass-through arguments; the local runner unless one is named."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args or []))
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options
