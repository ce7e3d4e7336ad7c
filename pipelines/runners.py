"""The runner a Beam job runs on: ``--runner=dask`` (Beam's DaskRunner with the fixes of
``pipelines.dask_runner``) on a scheduler named by ``--dask-address`` or on a LocalCluster the job
starts and stops; any other runner gets Beam's options unchanged (``i2i.core.beam``)."""
from __future__ import annotations

import argparse
import contextlib
import re
from typing import Any, Iterator

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from i2i.core.beam import beam_options
from i2i.core.cmdline import positive_int
from i2i.core.errors import InputError

DASK_RUNNER_NAMES = ("dask", "daskrunner", "fixeddaskrunner")
DASK_RUNNER_PATH = "pipelines.dask_runner.FixedDaskRunner"


def dask_address(text: str) -> str:
    """HOST:PORT (or tcp://HOST:PORT) of a Dask scheduler."""
    if not re.fullmatch(r"(tcp://|tls://)?[^\s:/]+:\d{1,5}", text):
        raise argparse.ArgumentTypeError(f"must be HOST:PORT of a Dask scheduler, got {text!r}")
    return text if "://" in text else f"tcp://{text}"


def is_dask_runner(name: str | None) -> bool:
    return bool(name) and name.lower().rsplit(".", 1)[-1] in DASK_RUNNER_NAMES


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``--runner=dask`` (Beam's DaskRunner with the fixes of ``pipelines.dask_runner``)."""
    parser.add_argument("--dask-address", type=dask_address, metavar="HOST:PORT",
                        help="with --runner=dask: join this Dask scheduler instead of starting a local cluster")
    parser.add_argument("--dask-workers", type=positive_int, metavar="N",
                        help="with --runner=dask and no --dask-address: worker processes of the local cluster "
                             "the job starts and stops (default 2)")


@contextlib.contextmanager
def job_options(args: Any, beam_args: list[str]) -> Iterator[PipelineOptions]:
    """Pipeline options for one run; with ``--runner=dask`` also the cluster it runs on.

    Without ``--dask-address`` a LocalCluster of ``--dask-workers`` processes lives as long as the block.
    """
    options = beam_options(beam_args)
    standard = options.view_as(StandardOptions)
    address, workers = getattr(args, "dask_address", None), getattr(args, "dask_workers", None)
    if not is_dask_runner(standard.runner):
        if address or workers:
            raise InputError("--dask-address and --dask-workers need --runner=dask")
        yield options
        return
    if address and workers:
        raise InputError("--dask-workers starts a local cluster; it cannot be combined with --dask-address")
    from pipelines.dask_runner import local_cluster  # dask is imported only by jobs that run on it

    if options.get_all_options().get("address"):
        raise InputError("name the Dask scheduler with --dask-address, not --dask_client_address")
    with contextlib.ExitStack() as stack:
        if not address:
            address = stack.enter_context(local_cluster(workers or 2))
        yield PipelineOptions([*beam_args, f"--runner={DASK_RUNNER_PATH}", f"--dask_client_address={address}"])


