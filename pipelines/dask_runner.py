"""Beam's DaskRunner with the defects that break the i2i jobs fixed, and the job's cluster handling.

Beam's ``apache_beam.runners.dask.DaskRunner`` (2.77) translates a pipeline into dask bags, but:

- a multi-output ParDo's outputs lose their tags: every consumer of one output receives all of
  them (the jobs' ``counts`` and dead-letter outputs would reach the main consumers);
- only the bag of the last transform is computed, so with several sinks only one branch runs;
- ``Create`` packs up to 128 elements in one partition and ``Reshuffle`` does nothing, so a job
  reading a few files runs in one bundle on one worker;
- side inputs reach the DoFn as the raw ``AsList``/``AsSingleton`` objects (and each task would
  recompute the side input's whole upstream graph), so ``CombineGlobally`` fails.

``FixedDaskRunner`` keeps one bag per PCollection (a multi-output ParDo's bag holds
(tag, value) pairs, selected per output); computes every leaf of the graph in one call (shared
upstream bags run once), without dask's bag optimisation (it fuses one lazy partition into
several consumers, and all but the first then see it empty); makes one bundle per created
element and gives each GroupByKey at least as many partitions as the cluster has worker threads;
passes side inputs as task dependencies, computed once. It covers what the jobs use: Create,
ParDo (with side inputs), GroupByKey, Flatten and Reshuffle in the global window, and refuses
other primitives.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
import typing as t

from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Reshuffle, dask_overrides
from apache_beam.runners.dask.transform_evaluator import get_windowed_value
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.core import DoFn, ParDo
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.windowed_value import WindowedValue

log = logging.getLogger(__name__)


class _TagReceiver(Receiver):
    """Collects a DoFn's outputs as (tag, value); the main output has tag None."""

    def __init__(self, tag: str | None, values: list) -> None:
        self.tag, self.values = tag, values

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append((self.tag, windowed_value.value))


class _TagReceivers(dict):
    def __init__(self) -> None:
        super().__init__()
        self.values: list = []

    def __missing__(self, tag):
        receiver = self[tag] = _TagReceiver(tag, self.values)
        return receiver


def _run_bundle(items, fn: DoFn, args: tuple, kwargs: dict, label: str, window_fn, side_views: list,
                *side_values: list) -> list:
    """One dask partition = one bundle: setup, start, process each element, finish, teardown.

    ``side_values`` are the side inputs' whole contents, computed once as dependencies of the task.
    """
    receivers = _TagReceivers()
    side_inputs = [SideInputMap(view, options, [get_windowed_value(v, None) for v in values])
                   for (view, options), values in zip(side_views, side_values)] or None
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None), side_inputs=side_inputs,
        input_args=list(args), input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return receivers.values


def _select(items, tag) -> list:
    """The values of one output of a multi-output bundle."""
    return [value for item_tag, value in items if item_tag == tag]


def _values(items) -> list:
    return [value for _, value in items]


def _key(item):
    return item[0]


def _grouped(groups) -> list:
    """(key, [(key, value), ...]) from dask's groupby -> Beam's (key, [value, ...])."""
    return [(key, [item[1] for item in items]) for key, items in groups]


def _concat(lists) -> list:
    return [item for part in lists for item in part]


@dataclasses.dataclass
class _BagVisitor(PipelineVisitor):
    """Builds one dask bag per PCollection and remembers which bags nothing consumes."""

    npartitions: int | None
    shuffle_partitions: int
    bags: dict = dataclasses.field(default_factory=collections.OrderedDict)
    consumed: set = dataclasses.field(default_factory=set)

    def _input(self, pcoll):
        self.consumed.add(pcoll)
        return self.bags[pcoll]

    def visit_transform(self, node: AppliedPTransform) -> None:
        import dask.bag as db

        transform = node.transform
        inputs = [p for p in node.inputs if not isinstance(p, pvalue.PBegin)]
        if isinstance(transform, _Create):
            items = list(transform.values)
            bag = db.from_sequence(items, npartitions=max(1, min(len(items), self.npartitions or len(items))))
        elif isinstance(transform, ParDo):
            main = next(iter(node.main_inputs.values()))
            window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
            side_views = [(type(si), si._view_options()) for si in node.side_inputs]
            side_values = [self._input(si.pvalue).reduction(list, _concat) for si in node.side_inputs]
            # The DoFn and its arguments only (side inputs as placeholders), not the applied transform.
            tagged = self._input(inputs[0]).map_partitions(_run_bundle, transform.fn, tuple(transform.args),
                                                           dict(transform.kwargs), node.full_label, window_fn,
                                                           side_views, *side_values)
            for tag, pcoll in node.outputs.items():
                self.bags[pcoll] = tagged.map_partitions(_select, tag) if len(node.outputs) > 1 else \
                    tagged.map_partitions(_values)
            return
        elif isinstance(transform, _GroupByKeyOnly):
            source = self._input(inputs[0])
            bag = source.groupby(_key, shuffle="tasks",
                                 npartitions=max(source.npartitions, self.shuffle_partitions)).map_partitions(_grouped)
        elif isinstance(transform, _Flatten):
            parts = [self._input(p) for p in inputs]
            bag = db.concat(parts) if parts else db.from_sequence([], npartitions=1)
        elif isinstance(transform, _Reshuffle):  # bundles are already spread (see Create, GroupByKey)
            bag = self._input(inputs[0])
        else:
            raise NotImplementedError(f"FixedDaskRunner cannot run {type(transform).__name__} ({node.full_label})")
        for pcoll in node.outputs.values():
            self.bags[pcoll] = bag

    def leaves(self) -> list:
        return [bag for pcoll, bag in self.bags.items() if pcoll not in self.consumed]


@dataclasses.dataclass
class FixedDaskRunnerResult(DaskRunnerResult):
    """Waits for every leaf; closes the client it opened, and cancels what still runs on failure."""

    owns_client: bool = True
    keys: frozenset = frozenset()  # every task of the job, to tell when none is still running
    settle_seconds: float = 60.0

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.cancel(self.futures, force=True)
                self._settle()
            raise
        finally:
            if self.owns_client and self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()

    def _settle(self) -> None:
        """Waits (bounded) until no task of the job still runs, so none writes after the job has failed."""
        deadline = time.monotonic() + self.settle_seconds
        while time.monotonic() < deadline:
            running = {str(key) for keys in self.client.processing().values() for key in keys}
            if not running & self.keys:
                return
            time.sleep(0.2)
        log.warning("dask: tasks of the failed job still running after %.0fs", self.settle_seconds)


class FixedDaskRunner(DaskRunner):
    """DaskRunner that keeps output tags, runs every sink and spreads bundles over the workers."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        if "partition_size" in bag_kwargs:
            raise ValueError("FixedDaskRunner makes one bundle per created element; use --dask_npartitions")
        client = ddist.Client(**dask_options)
        threads = sum(client.nthreads().values()) or 1
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs.get("npartitions"), threads)
        pipeline.visit(visitor)
        leaves = [bag.count() for bag in visitor.leaves()]  # counts: nothing but a number comes back
        log.info("dask: %d sinks on %d workers (%d threads) at %s", len(leaves), len(client.nthreads()), threads,
                 client.scheduler.address)
        futures = client.compute(leaves, optimize_graph=False)
        keys = frozenset(str(key) for leaf in leaves for key in leaf.__dask_graph__().keys())
        return FixedDaskRunnerResult(client, futures, keys=keys)


@contextlib.contextmanager
def local_cluster(workers: int) -> t.Iterator[str]:
    """A LocalCluster of ``workers`` processes (one thread each) for one job; yields its address."""
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
