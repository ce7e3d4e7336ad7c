"""Incremental update of an index version from the embedding table, without retraining.

The table is the source of truth for one model version: a note the table has and the index lacks
is added, a note whose embedding changed (its fingerprint differs) is replaced under the same id,
and a note the index has but the table no longer holds (deleted through the table API) is removed.
Note ids listed in a deletes file are removed too and become tombstones, carried into every child
version, so they never come back even while the table still holds their embeddings.
New vectors go to the lists of the existing coarse quantizer; the update then measures the
list-size imbalance and says when a rebuild (retraining) is due.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from i2i.core.errors import InputError
from index import gpu
from index.builder import auto_nlist, imbalance_of, prepared_vectors
from index.ids import vector_fingerprints
from index.manifest import Manifest
from index.source import Embeddings
from index.version_files import VersionContents


@dataclass
class RebuildPolicy:
    """When to advise retraining: list sizes drifted, or the corpus outgrew the training."""

    max_imbalance: float = 2.0  # absolute floor for the imbalance rule
    imbalance_growth: float = 1.5  # ... and relative to the imbalance right after training
    max_growth: float = 4.0  # ntotal / corpus size at training


@dataclass
class UpdatePlan:
    adds: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)  # held by the index, gone from the table or deleted
    tombstones: set[str] = field(default_factory=set)
    unchanged: int = 0

    @property
    def changes(self) -> int:
        return len(self.adds) + len(self.replaces) + len(self.removes)


@dataclass
class UpdateResult:
    contents: VersionContents
    plan: UpdatePlan
    imbalance: float
    advice: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def check_compatible(manifest: Manifest, embeddings: Embeddings) -> None:
    """Refuses to mix model versions or dimensions within one index lineage."""
    if embeddings.model_version != manifest.model_version:
        raise InputError(
            f"index version {manifest.version} holds model version {manifest.model_version!r}; refusing to add "
            f"embeddings of model version {embeddings.model_version!r} (build a new index for a new model)"
        )
    if embeddings.dim != manifest.dim:
        raise InputError(f"index version {manifest.version} has dim {manifest.dim}, the table has dim {embeddings.dim}")


def plan_update(contents: VersionContents, embeddings: Embeddings, deletes: list[str]) -> UpdatePlan:
    ids = contents.ids
    tombstones = set(contents.tombstones) | set(deletes)
    table_notes = set(embeddings.note_ids)
    plan = UpdatePlan(tombstones=tombstones)
    plan.removes = sorted(n for n in ids.note_ids() if n not in table_notes or n in tombstones)
    fingerprints = vector_fingerprints(embeddings.vectors)
    live = np.array([n not in tombstones for n in embeddings.note_ids], dtype=bool)
    known = ids.lookup(embeddings.note_ids)
    known[~live] = -1
    present = known >= 0
    changed = np.zeros(len(known), dtype=bool)
    changed[present] = ids.fingerprint_of(known[present]) != fingerprints[present]
    names = embeddings.note_ids
    plan.adds = [names[row] for row in np.flatnonzero(live & ~present)]
    plan.replaces = [names[row] for row in np.flatnonzero(changed)]
    plan.unchanged = int((present & ~changed).sum())
    return plan


def rebuild_advice(manifest: Manifest, ntotal: int, imbalance: float, policy: RebuildPolicy) -> list[str]:
    """Reasons to retrain (empty when none)."""
    reasons = []
    imbalance_limit = max(policy.max_imbalance, policy.imbalance_growth * manifest.trained_imbalance)
    if imbalance > imbalance_limit:
        reasons.append(f"list-size imbalance {imbalance:.2f} exceeds {imbalance_limit:.2f} "
                       f"(it was {manifest.trained_imbalance:.2f} after training)")
    if manifest.trained_ntotal and ntotal > policy.max_growth * manifest.trained_ntotal:
        reasons.append(f"the index grew to {ntotal} vectors, {ntotal / manifest.trained_ntotal:.1f}x the "
                       f"{manifest.trained_ntotal} it was trained for (nlist {manifest.nlist}; a rebuild "
                       f"would choose nlist {auto_nlist(ntotal)})")
    return reasons


def apply_update(manifest: Manifest, contents: VersionContents, embeddings: Embeddings, deletes: list[str],
                 policy: RebuildPolicy | None = None, use_gpu: bool | None = None) -> UpdateResult:
    """Turns a loaded version's contents into its child's contents (the loaded copy is modified)."""
    check_compatible(manifest, embeddings)
    policy = policy or RebuildPolicy()
    started = time.perf_counter()
    plan = plan_update(contents, embeddings, deletes)
    timings = {"plan_s": time.perf_counter() - started}
    ids = contents.ids.copy()
    index = contents.index

    started = time.perf_counter()
    replaced_ids = ids.ids_of(plan.replaces)
    removed_ids = ids.remove(plan.removes)
    stale = np.concatenate([removed_ids, replaced_ids])
    if stale.size:
        index.remove_ids(stale)
    timings["remove_s"] = time.perf_counter() - started

    row_of = {note_id: row for row, note_id in enumerate(embeddings.note_ids)}
    replace_rows = np.array([row_of[n] for n in plan.replaces], dtype=np.int64)
    add_rows = np.array([row_of[n] for n in plan.adds], dtype=np.int64)
    raw = embeddings.vectors
    if replace_rows.size:
        ids.refingerprint(replaced_ids, vector_fingerprints(raw[replace_rows]))
    added_ids = ids.assign(plan.adds, vector_fingerprints(raw[add_rows])) if add_rows.size else np.empty(0, np.int64)
    new_ids = np.concatenate([replaced_ids, added_ids])
    new_rows = np.concatenate([replace_rows, add_rows])
    new_vectors = prepared_vectors(
        Embeddings([embeddings.note_ids[r] for r in new_rows], raw[new_rows].reshape(-1, embeddings.dim),
                   embeddings.model_version), manifest.metric)
    started = time.perf_counter()
    if new_ids.size:
        index = gpu.add_with_ids(index, new_vectors, new_ids, gpu.want_gpu(use_gpu), desc="update")
    timings["add_s"] = time.perf_counter() - started

    vectors = None
    if contents.vectors is not None:
        vectors = np.zeros((ids.next_id, manifest.dim), dtype=np.float32)
        vectors[: contents.vectors.shape[0]] = contents.vectors
        vectors[removed_ids] = 0
        vectors[new_ids] = new_vectors
    if index.ntotal != len(ids):
        raise RuntimeError(f"index holds {index.ntotal} vectors but the id map {len(ids)}")
    new_contents = VersionContents(index=index, ids=ids, vectors=vectors, tombstones=plan.tombstones,
                                   dead_letter=list(embeddings.dead_letter))
    imbalance = imbalance_of(index)
    return UpdateResult(new_contents, plan, imbalance, rebuild_advice(manifest, index.ntotal, imbalance, policy), timings)

