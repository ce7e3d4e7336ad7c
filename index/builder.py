"""Training and filling a fresh IVF index from embeddings (build and rebuild)."""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field

import faiss
import numpy as np

from i2i.core.errors import InputError
from index import gpu
from index.calibrate import Calibration, calibrate_nprobe
from index.ids import IdMap, vector_fingerprints
from index.search import normalize_rows
from index.source import Embeddings
from index.version_files import VersionContents

log = logging.getLogger(__name__)

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
MIN_POINTS_PER_LIST = 39  # FAISS's own lower bound for k-means training
MIN_TRAIN_SAMPLE = 10_000  # PQ/SQ codebooks (256 centroids per sub-quantizer) need about this many


@dataclass
class BuildConfig:
    """How to build: ``factory`` is an IVF factory string or just its encoding (Flat, SQ8, PQ16...)."""

    factory: str = "Flat"
    nlist: int | None = None  # None: chosen from the corpus size
    train_sample: int | None = None  # None: 50 vectors per list (at least 10,000), at most the corpus
    metric: str = "ip"  # inner product on L2-normalised vectors, or "l2"
    rerank: bool | None = None  # None: on for PQ encodings (their recall needs it)
    rerank_factor: int = 8  # candidates fetched per result kept, when re-ranking
    # None: the smallest nprobe whose merged recall@calibration_k over random histories of
    # calibration_history notes reaches target_recall (index/calibrate.py).
    default_nprobe: int | None = None
    target_recall: float = 0.95
    calibration_k: int = 200
    calibration_history: int = 50
    seed: int = 1234
    use_gpu: bool | None = None  # None: when a GPU is present
    add_batch: int = 65536


@dataclass
class BuildResult:
    contents: VersionContents
    factory: str
    nlist: int
    train_size: int
    imbalance: float
    rerank: bool
    normalized: bool
    default_nprobe: int = 1
    calibration: "Calibration | None" = None
    timings: dict[str, float] = field(default_factory=dict)


def auto_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (rounded to a power of two), and never fewer than 39 vectors per list."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return int(max(1, min(target, n // MIN_POINTS_PER_LIST)))


def resolve_factory(factory: str, nlist: int | None, n: int) -> tuple[str, int]:
    """Full IVF factory string and its nlist; a bare encoding gets an ``IVF{nlist},`` prefix."""
    factory = factory.strip()
    if not factory:
        raise InputError("--factory is empty")
    if "IDMap" in factory:
        raise InputError(f"--factory {factory!r}: IDMap wrappers are not used (the IVF index stores its own ids)")
    if "IVF" not in factory:
        chosen = nlist or auto_nlist(n)
        return f"IVF{chosen},{factory}", chosen
    if "{nlist}" in factory:
        chosen = nlist or auto_nlist(n)
        return factory.replace("{nlist}", str(chosen)), chosen
    match = re.search(r"IVF(\d+)", factory)
    if match is None:
        raise InputError(f"--factory {factory!r}: cannot read the number of lists after 'IVF'")
    given = int(match.group(1))
    if nlist is not None and nlist != given:
        raise InputError(f"--nlist {nlist} contradicts --factory {factory!r}")
    return factory, given


def faiss_reason(exc: Exception) -> str:
    """The last, human part of a FAISS C++ error message."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.rsplit("Error: ", 1)[-1]


def make_index(dim: int, factory: str, metric: str) -> faiss.Index:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}: expected one of {sorted(METRICS)}")
    try:
        index = faiss.index_factory(dim, factory, METRICS[metric])
    except RuntimeError as exc:
        raise InputError(f"--factory {factory!r} is not a valid FAISS factory for dim {dim}: "
                         f"{faiss_reason(exc)}") from exc
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError as exc:
        raise InputError(f"--factory {factory!r} does not build an IVF index") from exc
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # slow to train and unused: search ranks by PQ distance
    return index


def wants_rerank(factory: str, requested: bool | None) -> bool:
    if requested is not None:
        return requested
    encoding = factory.split(",")[-1]
    return encoding.startswith("PQ") or encoding in ("SQ4", "SQ6")


def imbalance_of(index: faiss.Index) -> float:
    ivf = faiss.extract_index_ivf(index)
    return float(ivf.invlists.imbalance_factor()) if index.ntotal else 1.0


def prepared_vectors(embeddings: Embeddings, metric: str) -> np.ndarray:
    return normalize_rows(embeddings.vectors) if metric == "ip" else np.ascontiguousarray(embeddings.vectors)


def build(embeddings: Embeddings, config: BuildConfig) -> BuildResult:
    """Trains the coarse quantizer (and codes) on a sample, then adds every vector under its own id."""
    n = len(embeddings)
    if n == 0:
        raise InputError("nothing to index: no embeddings")
    factory, nlist = resolve_factory(config.factory, config.nlist, n)
    if nlist < 1:
        raise InputError(f"--nlist must be at least 1, got {nlist}")
    index = make_index(embeddings.dim, factory, config.metric)
    vectors = prepared_vectors(embeddings, config.metric)
    train_size = min(n, config.train_sample or max(MIN_TRAIN_SAMPLE, 50 * nlist))
    if train_size < nlist:
        raise InputError(f"cannot train {nlist} lists on {train_size} vectors: lower --nlist or raise --train-sample")
    rng = np.random.default_rng(config.seed)
    sample_rows = np.sort(rng.choice(n, size=train_size, replace=False)) if train_size < n else np.arange(n)
    use_gpu = gpu.want_gpu(config.use_gpu)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        gpu.train(index, vectors[sample_rows], use_gpu)
    except RuntimeError as exc:
        raise InputError(f"training {factory} on {train_size} vectors failed: {faiss_reason(exc)}") from exc
    timings["train_s"] = time.perf_counter() - started
    ids = IdMap()
    labels = ids.assign(embeddings.note_ids, vector_fingerprints(embeddings.vectors))
    started = time.perf_counter()
    index = gpu.add_with_ids(index, vectors, labels, use_gpu, batch_size=config.add_batch)
    timings["add_s"] = time.perf_counter() - started
    rerank = wants_rerank(factory, config.rerank)
    contents = VersionContents(index=index, ids=ids, vectors=vectors if rerank else None,
                               dead_letter=list(embeddings.dead_letter))
    log.info("built %s over %d vectors (train %.1fs, add %.1fs)", factory, n, timings["train_s"], timings["add_s"])
    calibration = None
    if config.default_nprobe is None:
        if not 0 < config.target_recall <= 1:
            raise InputError(f"--target-recall must be in (0, 1], got {config.target_recall}")
        started = time.perf_counter()
        calibration = calibrate_nprobe(index, vectors, labels, config.metric, config.target_recall,
                                       rerank_vectors=vectors if rerank else None,
                                       rerank_factor=config.rerank_factor, k=config.calibration_k,
                                       history=config.calibration_history, seed=config.seed)
        timings["calibrate_s"] = time.perf_counter() - started
        default_nprobe = calibration.nprobe
    else:
        default_nprobe = min(config.default_nprobe, nlist)
    return BuildResult(contents, factory, nlist, train_size, imbalance_of(index), rerank,
                       normalized=config.metric == "ip", default_nprobe=default_nprobe, calibration=calibration,
                       timings=timings)
