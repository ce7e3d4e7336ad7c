"""The index lifecycle jobs behind ``i2i index``: build, update, rebuild, rollback, gc, info.

Each writing job holds the directory's writer lock from reading CURRENT to publishing, so two jobs
never fork the lineage; each publishes one new immutable version and then applies retention.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from i2i.core.errors import InputError
from index.builder import BuildConfig, BuildResult, build
from index.manifest import Manifest
from index.source import Embeddings, read_deletes, read_publish_times, read_table
from index.store import DEFAULT_KEEP, GcReport, IndexStore
from index.updater import RebuildPolicy, UpdatePlan, apply_update, rebuild_advice


@dataclass
class JobSummary:
    """What a job did; printed by the CLI."""

    operation: str
    version: str
    parent: str | None
    model_version: str
    factory: str
    ntotal: int
    nlist: int
    imbalance: float
    path: Path
    plan: UpdatePlan | None = None
    advice: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    gc: GcReport | None = None
    default_nprobe: int | None = None
    calibration: str | None = None  # how the default nprobe was chosen

    def lines(self) -> list[str]:
        out = [f"{self.operation}: published {self.version} (parent {self.parent or '-'}) at {self.path}",
               f"  model_version {self.model_version}  factory {self.factory}  nlist {self.nlist}  "
               f"ntotal {self.ntotal}  imbalance {self.imbalance:.3f}"]
        if self.plan is not None:
            out.append(f"  added {len(self.plan.adds)}  replaced {len(self.plan.replaces)}  removed "
                       f"{len(self.plan.removes)}  unchanged {self.plan.unchanged}  tombstones {len(self.plan.tombstones)}")
        if self.default_nprobe is not None:
            out.append(f"  default nprobe {self.default_nprobe}" + (f" ({self.calibration})" if self.calibration else ""))
        if self.skipped:
            out.append(f"  skipped {self.skipped} unusable embeddings (see {self.path / 'dead_letter.parquet'})")
        out.append("  " + "  ".join(f"{k} {v:.2f}" for k, v in self.timings.items()))
        if self.advice:
            out += [f"  rebuild advised: {reason}" for reason in self.advice]
        elif self.plan is not None:
            out.append("  rebuild not needed")
        if self.gc is not None and self.gc.removed:
            out.append(f"  retention removed {', '.join(self.gc.removed)}")
        return out


def calibration_note(result: BuildResult) -> str | None:
    c = result.calibration
    if c is None:
        return "given"
    tried = ", ".join(f"{nprobe}: {recall:.3f}" for nprobe, recall in c.recall_by_nprobe.items())
    met = ">=" if c.recall >= c.target else "< (not reached)"
    capped = ("" if c.recall >= c.target else
              "; no nprobe reaches the target: the codes cap the recall, and this is the smallest nprobe at "
              "the best recall measured (re-rank with --rerank on, or use finer codes)")
    return (f"merged recall@{c.k} {c.recall:.3f} {met} target {c.target:g} over {c.queries} histories of "
            f"{c.history} notes{capped}; tried {tried}")


def _publish_built(store: IndexStore, result: BuildResult, embeddings: Embeddings, operation: str,
                   config: BuildConfig, keep: int, timings: dict[str, float]) -> JobSummary:
    parent = store.current_version()
    index = result.contents.index
    manifest = Manifest(
        version=store.next_version(), parent=parent, model_version=embeddings.model_version,
        dim=embeddings.dim, metric=config.metric, factory=result.factory, ntotal=int(index.ntotal),
        nlist=result.nlist, next_id=result.contents.ids.next_id, normalized=result.normalized,
        rerank=result.rerank, rerank_factor=config.rerank_factor,
        default_nprobe=result.default_nprobe, train_size=result.train_size,
        trained_ntotal=int(index.ntotal), trained_imbalance=result.imbalance, imbalance=result.imbalance,
        tombstones=len(result.contents.tombstones), skipped=len(embeddings.dead_letter), operation=operation)
    started = time.perf_counter()
    path = store.publish(manifest, result.contents)
    timings = {**timings, **result.timings, "write_s": time.perf_counter() - started}
    return JobSummary(operation, manifest.version, parent, manifest.model_version, manifest.factory,
                      manifest.ntotal, manifest.nlist, manifest.imbalance, path, timings=timings,
                      skipped=manifest.skipped, gc=store.gc(keep), default_nprobe=manifest.default_nprobe,
                      calibration=calibration_note(result))


def build_from_embeddings(store: IndexStore, embeddings: Embeddings, config: BuildConfig,
                          deletes: list[str] | None = None, keep: int = DEFAULT_KEEP,
                          operation: str = "build", timings: dict[str, float] | None = None,
                          publish_times: dict[str, int] | None = None) -> JobSummary:
    """Trains and publishes a fresh version (call under the writer lock). Deleted ids are left out
    and recorded as tombstones."""
    tombstones = set(deletes or [])
    result = build(embeddings.without(tombstones), config)
    result.contents.tombstones = tombstones
    if publish_times:
        result.contents.ids.set_published(publish_times)
    return _publish_built(store, result, embeddings, operation, config, keep, timings or {})


def update_from_embeddings(store: IndexStore, embeddings: Embeddings, deletes: list[str] | None = None,
                           keep: int = DEFAULT_KEEP, policy: RebuildPolicy | None = None,
                           use_gpu: bool | None = None, timings: dict[str, float] | None = None,
                           publish_times: dict[str, int] | None = None) -> JobSummary:
    """Publishes a child of CURRENT with the table's changes (call under the writer lock)."""
    timings = dict(timings or {})
    started = time.perf_counter()
    loaded = store.load(hold=False)
    timings["load_s"] = time.perf_counter() - started
    parent = loaded.manifest_record
    result = apply_update(parent, loaded.contents, embeddings, deletes or [], policy, use_gpu)
    if publish_times:
        result.contents.ids.set_published(publish_times)
    timings.update(result.timings)
    index = result.contents.index
    manifest = Manifest(
        version=store.next_version(), parent=parent.version, model_version=parent.model_version, dim=parent.dim,
        metric=parent.metric, factory=parent.factory, ntotal=int(index.ntotal), nlist=parent.nlist,
        next_id=result.contents.ids.next_id, normalized=parent.normalized, rerank=parent.rerank,
        rerank_factor=parent.rerank_factor, default_nprobe=parent.default_nprobe, train_size=parent.train_size,
        trained_ntotal=parent.trained_ntotal, trained_imbalance=parent.trained_imbalance,
        imbalance=result.imbalance, tombstones=len(result.contents.tombstones),
        skipped=len(embeddings.dead_letter), operation="update")
    started = time.perf_counter()
    path = store.publish(manifest, result.contents)
    timings["write_s"] = time.perf_counter() - started
    return JobSummary("update", manifest.version, parent.version, manifest.model_version, manifest.factory,
                      manifest.ntotal, manifest.nlist, manifest.imbalance, path, plan=result.plan,
                      advice=result.advice, timings=timings, skipped=manifest.skipped, gc=store.gc(keep))


def _read(table_url: str, model_version: str | None, metric: str) -> tuple[Embeddings, dict[str, float]]:
    started = time.perf_counter()
    embeddings = read_table(table_url, model_version, require_norm=metric == "ip")
    return embeddings, {"read_s": time.perf_counter() - started}


def build_job(index_dir: str, table_url: str, config: BuildConfig, model_version: str | None = None,
              deletes_path: str | None = None, keep: int = DEFAULT_KEEP, notes_path: str | None = None) -> JobSummary:
    store = IndexStore(index_dir)
    deletes = read_deletes(deletes_path) if deletes_path else []
    times = read_publish_times(notes_path) if notes_path else None
    with store.writer_lock():
        embeddings, timings = _read(table_url, model_version, config.metric)
        return build_from_embeddings(store, embeddings, config, deletes, keep, "build", timings, times)


def update_job(index_dir: str, table_url: str, model_version: str | None = None, deletes_path: str | None = None,
               keep: int = DEFAULT_KEEP, policy: RebuildPolicy | None = None,
               use_gpu: bool | None = None, notes_path: str | None = None) -> JobSummary:
    store = IndexStore(index_dir)
    deletes = read_deletes(deletes_path) if deletes_path else []
    times = read_publish_times(notes_path) if notes_path else None
    with store.writer_lock():
        current = store.manifest(store.resolve(None))
        if model_version is not None and model_version != current.model_version:
            raise InputError(f"index version {current.version} holds model version {current.model_version!r}; "
                             f"refusing to update it with model version {model_version!r} (build a new index)")
        embeddings, timings = _read(table_url, current.model_version, current.metric)
        return update_from_embeddings(store, embeddings, deletes, keep, policy, use_gpu, timings, times)


def rebuild_config(current: Manifest, nlist: int | None, factory: str | None, train_sample: int | None,
                   use_gpu: bool | None) -> BuildConfig:
    """The current version's settings, with nlist chosen afresh for today's corpus unless given."""
    encoding = factory or re.sub(r"IVF\d+", "IVF{nlist}", current.factory)
    return BuildConfig(factory=encoding, nlist=nlist, train_sample=train_sample, metric=current.metric,
                       rerank=current.rerank if factory is None else None, rerank_factor=current.rerank_factor,
                       default_nprobe=current.default_nprobe if nlist is None and factory is None else None,
                       use_gpu=use_gpu)


def rebuild_job(index_dir: str, table_url: str, nlist: int | None = None, factory: str | None = None,
                train_sample: int | None = None, deletes_path: str | None = None, keep: int = DEFAULT_KEEP,
                use_gpu: bool | None = None, notes_path: str | None = None,
                model_version: str | None = None) -> JobSummary:
    """Retrains from the table with the current version's settings, tombstones and publication
    times (a notes table given here adds to them).

    The model version is the current version's, or ``model_version``: after a retrain, the new
    model's embeddings of the catalogue become a new version whose parent is the old model's
    (an update never mixes model versions, so this is how the index follows a new model).
    """
    store = IndexStore(index_dir)
    extra_deletes = read_deletes(deletes_path) if deletes_path else []
    times = read_publish_times(notes_path) if notes_path else {}
    with store.writer_lock():
        current_version = store.resolve(None)
        current = store.manifest(current_version)
        current_contents = store.load(current_version, hold=False).contents
        tombstones = current_contents.tombstones
        times = {**current_contents.ids.publish_times(), **times}
        config = rebuild_config(current, nlist, factory, train_sample, use_gpu)
        embeddings, timings = _read(table_url, model_version or current.model_version, current.metric)
        return build_from_embeddings(store, embeddings, config, sorted(tombstones | set(extra_deletes)), keep,
                                     "rebuild", timings, times)


@dataclass
class IndexJob:
    """One ``i2i index build|update|rebuild`` run, typed: what the command line's options say."""

    operation: str  # "build", "update" or "rebuild"
    index_dir: str
    table: str
    build: BuildConfig = field(default_factory=BuildConfig)  # build: how to train the fresh index
    model_version: str | None = None  # build, update; rebuild: after a retrain, the new model's version
    deletes: str | None = None
    keep: int = DEFAULT_KEEP
    policy: RebuildPolicy = field(default_factory=RebuildPolicy)  # update: when to advise a rebuild
    nlist: int | None = None  # rebuild: None keeps CURRENT's choice for today's corpus
    factory: str | None = None  # rebuild
    train_sample: int | None = None  # rebuild
    use_gpu: bool | None = None  # update, rebuild (build: build.use_gpu)
    notes: str | None = None  # notes table whose publication times the index keeps (published_after)


def run(job: IndexJob) -> JobSummary:
    """The index stage's one entry point: build, update or rebuild as ``job.operation`` says."""
    if job.operation == "build":
        return build_job(job.index_dir, job.table, job.build, job.model_version, job.deletes, job.keep, job.notes)
    if job.operation == "update":
        return update_job(job.index_dir, job.table, job.model_version, job.deletes, job.keep, job.policy,
                          job.use_gpu, job.notes)
    if job.operation == "rebuild":
        return rebuild_job(job.index_dir, job.table, job.nlist, job.factory, job.train_sample, job.deletes,
                           job.keep, job.use_gpu, job.notes, job.model_version)
    raise InputError(f"unknown index operation {job.operation!r}: expected build, update or rebuild")


def rollback_job(index_dir: str, to: str) -> tuple[str | None, str]:
    store = IndexStore(index_dir)
    with store.writer_lock():
        return store.rollback(to), to


def gc_job(index_dir: str, keep: int) -> GcReport:
    store = IndexStore(index_dir)
    with store.writer_lock():
        return store.gc(keep)


def info(index_dir: str, verify: bool = False) -> dict:
    """Versions with their counts and settings; the current one with rebuild advice."""
    store = IndexStore(index_dir)
    if not store.root.exists():
        raise InputError(f"index directory not found: {index_dir}")
    current = store.current_version()
    held = store.held_versions()
    rows = []
    for version in store.versions():
        manifest = store.verify(version) if verify else store.manifest(version)
        rows.append({"version": version, "current": version == current, "held": held.get(version, []),
                     "parent": manifest.parent, "operation": manifest.operation, "created_at": manifest.created_at,
                     "model_version": manifest.model_version, "factory": manifest.factory, "nlist": manifest.nlist,
                     "ntotal": manifest.ntotal, "imbalance": manifest.imbalance, "tombstones": manifest.tombstones,
                     "rerank": manifest.rerank, "dim": manifest.dim, "metric": manifest.metric})
    advice: list[str] = []
    if current is not None:
        manifest = store.manifest(current)
        advice = rebuild_advice(manifest, manifest.ntotal, manifest.imbalance, RebuildPolicy())
    return {"index_dir": str(store.root), "current": current, "versions": rows, "rebuild_advice": advice}
