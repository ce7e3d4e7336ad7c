"""faiss-gpu for training and adding when a GPU is present; the CPU index otherwise.

The published index is always a CPU index (it is what gets written and served); a GPU only speeds
up k-means training of the coarse quantizer and the bulk add, and any GPU failure (an encoding
the GPU build does not support, out of memory) falls back to the CPU path with a warning.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def want_gpu(requested: bool | None) -> bool:
    """None means: use a GPU when one is present."""
    available = gpu_count() > 0
    if requested and not available:
        log.warning("a GPU was requested but faiss sees none; using the CPU")
    return available if requested is None else bool(requested and available)


def train(index: faiss.Index, sample: np.ndarray, use_gpu: bool) -> None:
    """Trains the index; on a GPU, k-means assignment runs on a GPU flat index."""
    ivf = faiss.extract_index_ivf(index)
    if use_gpu:
        try:
            flat = faiss.IndexFlatIP(ivf.d) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(ivf.d)
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(flat)
        except (RuntimeError, AttributeError) as exc:
            log.warning("GPU clustering unavailable (%s); training on the CPU", exc)
    index.train(sample)
    ivf.clustering_index = None


def add_with_ids(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, use_gpu: bool,
                 batch_size: int = 65536, desc: str = "add") -> faiss.Index:
    """Adds vectors under their own ids (the IVF index's add_with_ids); returns the CPU index."""
    target = index
    if use_gpu:
        try:
            target = faiss.index_cpu_to_all_gpus(index)
        except (RuntimeError, AttributeError) as exc:
            log.warning("GPU add unavailable for this index (%s); adding on the CPU", exc)
            target = index
    with tqdm(total=len(ids), desc=desc, unit="vec", disable=len(ids) < 200_000) as progress:
        for start in range(0, len(ids), batch_size):
            target.add_with_ids(vectors[start:start + batch_size], ids[start:start + batch_size])
            progress.update(min(batch_size, len(ids) - start))
    return faiss.index_gpu_to_cpu(target) if target is not index else index
