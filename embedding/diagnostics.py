"""Training diagnostics: low-noise signals of whether the representation is learning.

One pass embeds every note of the val pairs; from those embeddings come the validation loss (eq. 1
or eq. 9 over fixed full batches of all val pairs: a note's embedding does not depend on its batch),
R@k of the val pairs in the val pool, the mean pairwise cosine of a fixed probe set (near 1 means
collapse) and, when the data's latent attributes are known, kNN accuracy of category and colour.
The oracle loss is the same loss on embeddings built from the latent attributes, beside the chance
level ln(2B - 1): together they bracket what the data allows.
"""
from __future__ import annotations

import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embedding.batching import Pair, one_epoch
from embedding.inputs import NoteProcessor
from embedding.losses import contrastive_loss, micl_loss
from embedding.mlrm import MLRM

ATTRIBUTES_DIR = "_attributes"
# fashion-notes v2 (with products): equal weights give the nested levels of embedding/baselines/oracle.py
# (same product 4 > same family 3 > same category and colour 2 > same category 1)
PRODUCT_ORACLE_WEIGHTS = {"product_id": 1.0, "category": 1.0, "colour": 1.0, "style": 1.0}
# fashion-notes v1: sessions favoured notes matching their theme by these log-weights
ORACLE_WEIGHTS = {"category": 2.5, "colour": 1.2, "style": 0.8}
KNN_ATTRIBUTES = ("category", "colour")
TAU_GRID = tuple(np.round(np.arange(0.0, 6.01, 0.25), 2))


def load_attributes(notes_path: str) -> dict[str, dict] | None:
    """Latent attributes per note from ``_attributes/`` beside the notes table, or None when absent."""
    from i2i.core.io import read_table

    folder = Path(notes_path).parent / ATTRIBUTES_DIR
    if not folder.exists():
        return None
    return {row["note_id"]: row for row in read_table(str(folder)).to_pylist()}


def fixed_batches(pairs: list[Pair], batch_size: int) -> list[list[Pair]]:
    """Full batches of distinct notes over all pairs, the same every time (chance level ln(2B - 1))."""
    size = min(batch_size, len(pairs))
    batches = list(one_epoch(pairs, size, random.Random(12345), allow_partial=False))
    return batches or list(one_epoch(pairs, size, random.Random(12345), allow_partial=True))


@dataclass
class Embedded:
    """Embeddings of notes by id (rows of ``multimodal`` and ``visual``)."""

    row: dict[str, int]
    multimodal: torch.Tensor
    visual: torch.Tensor | None

    def rows(self, ids: list[str]) -> torch.Tensor:
        return torch.tensor([self.row[i] for i in ids], dtype=torch.long)


@torch.no_grad()
def embed_ids(model: MLRM, processor: NoteProcessor, notes: dict[str, dict], ids: list[str],
              device: torch.device, cache=None, chunk: int = 32) -> Embedded:
    """Embeds the notes in eval mode (vision features from ``cache`` when given)."""
    from embedding.features import prepare_notes

    was_training = model.training
    model.eval()
    multimodal, visual = [], []
    for start in range(0, len(ids), chunk):
        out = model(prepare_notes(processor, ids[start:start + chunk], notes, cache).to(device))
        multimodal.append(out.multimodal.float().cpu())
        if out.visual is not None:
            visual.append(out.visual.float().cpu())
    model.train(was_training)
    return Embedded({n: i for i, n in enumerate(ids)}, torch.cat(multimodal),
                    torch.cat(visual) if visual else None)


def batch_ids(batch: list[Pair]) -> list[str]:
    return [q for q, _ in batch] + [t for _, t in batch]


def loss_of_batches(embedded: Embedded, batches: list[list[Pair]], tau: torch.Tensor, alpha: float) -> float:
    losses = []
    for batch in batches:
        rows = embedded.rows(batch_ids(batch))
        if embedded.visual is not None:
            loss = micl_loss(embedded.visual[rows], embedded.multimodal[rows], tau, alpha)
        else:
            loss = contrastive_loss(embedded.multimodal[rows], tau)
        losses.append(float(loss))
    return float(np.mean(losses)) if losses else float("nan")


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine over distinct pairs: near 1 when every note sits on one point (collapse)."""
    x = F.normalize(vectors.float(), dim=-1)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    sims = x @ x.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def knn_accuracy(vectors: torch.Tensor, labels: list[str], k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour (cosine) majority vote; ties go to the nearest voter's label."""
    x = F.normalize(vectors.float(), dim=-1)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    sims = x @ x.T
    sims.fill_diagonal_(-math.inf)
    neighbours = sims.topk(min(k, n - 1), dim=1).indices.tolist()
    correct = 0
    for i, row in enumerate(neighbours):
        votes: dict[str, int] = {}
        for j in row:
            votes[labels[j]] = votes.get(labels[j], 0) + 1
        best = max(votes.values())
        winner = next(labels[j] for j in row if votes[labels[j]] == best)
        correct += winner == labels[i]
    return correct / n


def recall_in_pool(embedded: Embedded, pairs: list[Pair], k: int) -> float:
    """R@k of the pairs, each query ranked against every embedded note but itself (ties counted against)."""
    from embedding.evaluation import DenseScorer, EvalConfig, target_ranks

    queries = embedded.rows([q for q, _ in pairs]).numpy()
    targets = embedded.rows([t for _, t in pairs]).numpy()
    ranks = target_ranks(DenseScorer(embedded.multimodal.numpy(), device="cpu"), queries, targets, EvalConfig())
    return float(np.mean(ranks <= k))


def oracle_vectors(attributes: dict[str, dict], ids: list[str]) -> torch.Tensor | None:
    """One-hot latent attributes, each scaled by the square root of its weight, so that the inner
    product of two notes is the weighted count of attributes they share."""
    sample = next(iter(attributes.values()))
    weights = PRODUCT_ORACLE_WEIGHTS if "product_id" in sample else ORACLE_WEIGHTS
    columns = [c for c in weights if c in sample] or \
        [c for c, v in sample.items() if c != "note_id" and isinstance(v, str)]
    if not columns:
        return None
    blocks = []
    for column in columns:
        values = sorted({str(a[column]) for a in attributes.values()})
        index = {v: i for i, v in enumerate(values)}
        block = torch.zeros(len(ids), len(values))
        for row, note_id in enumerate(ids):
            block[row, index[str(attributes[note_id][column])]] = 1.0
        blocks.append(block * math.sqrt(weights.get(column, 1.0)))
    return torch.cat(blocks, dim=1)


def oracle_loss(attributes: dict[str, dict], batches: list[list[Pair]]) -> tuple[float, float] | None:
    """(loss, tau) of the attribute oracle on the batches, at the best temperature of a grid."""
    ids = sorted({n for b in batches for n in batch_ids(b)})
    if any(n not in attributes for n in ids):
        return None
    vectors = oracle_vectors(attributes, ids)
    if vectors is None:
        return None
    embedded = Embedded({n: i for i, n in enumerate(ids)}, F.normalize(vectors, dim=-1), None)
    best = min((loss_of_batches(embedded, batches, torch.tensor(float(t)), 0.0), float(t)) for t in TAU_GRID)
    return best


class Diagnostics:
    """Measures one model state on the val pairs; the probe set is the first ``probe_size`` val notes."""

    def __init__(self, val_pairs: list[Pair], notes: dict[str, dict], batch_size: int, notes_path: str | None,
                 probe_size: int = 256, k: int = 100, max_batches: int = 0):
        self.pairs = val_pairs
        self.notes = notes
        self.batches = fixed_batches(val_pairs, batch_size) if len(val_pairs) >= 2 else []
        self.batches = self.batches[: max_batches or None]  # 0 = all
        self.ids = sorted({n for pair in val_pairs for n in pair})
        self.probe = self.ids[:probe_size]
        self.k = k
        self.attributes = load_attributes(notes_path) if notes_path else None
        if self.attributes is not None and any(n not in self.attributes for n in self.ids):
            self.attributes = None
        pairs_in_batch = len(self.batches[0]) if self.batches else batch_size
        self.chance = math.log(2 * pairs_in_batch - 1)
        self.oracle = oracle_loss(self.attributes, self.batches) if self.attributes and self.batches else None

    def reference(self) -> dict[str, Any]:
        """The fixed figures: chance and oracle losses, sizes."""
        return {"chance_loss": self.chance,
                "oracle_loss": self.oracle[0] if self.oracle else None,
                "oracle_tau": self.oracle[1] if self.oracle else None,
                "oracle": "latent attributes" if self.oracle else "not available (no _attributes/ beside the notes)",
                "val_pairs": len(self.pairs), "val_batches": len(self.batches), "val_pool": len(self.ids),
                "probe": len(self.probe), "recall_k": self.k}

    def measure(self, model: MLRM, processor: NoteProcessor, device: torch.device, cache=None) -> dict[str, Any]:
        if not self.batches:
            return {}
        embedded = embed_ids(model, processor, self.notes, self.ids, device, cache)
        tau = model.tau.detach().float().cpu()
        record: dict[str, Any] = {
            "val_loss": loss_of_batches(embedded, self.batches, tau, model.config.alpha),
        }
        for k in sorted({10, self.k}):  # R@10 too: small val pools make R@100 nearly 1
            record[f"val_R@{k}"] = recall_in_pool(embedded, self.pairs, k)
        probe = embedded.multimodal[embedded.rows(self.probe)]
        record["probe_cosine"] = mean_pairwise_cosine(probe)
        if self.attributes is not None:
            for name in KNN_ATTRIBUTES:
                if name in self.attributes[self.probe[0]]:
                    labels = [str(self.attributes[n][name]) for n in self.probe]
                    record[f"knn_{name}"] = knn_accuracy(probe, labels)
        return record


def write_log(history: list[dict[str, Any]], reference: dict[str, Any]) -> bytes:
    """JSON lines: the reference figures first, then one record per logged step."""
    lines = [json.dumps({"reference": reference})] + [json.dumps(record) for record in history]
    return ("\n".join(lines) + "\n").encode()


def plot_curves(history: list[dict[str, Any]], reference: dict[str, Any], title: str) -> bytes:
    """PNG: losses (train, val, chance, oracle), and the probe figures (kNN, cosine, R@k) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    if train:
        left.plot(*zip(*train), label="train loss", alpha=0.6)
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val:
        left.plot(*zip(*val), "o-", label="val loss (all val pairs)")
    if reference.get("chance_loss") is not None:
        left.axhline(reference["chance_loss"], color="grey", linestyle="--", label="chance ln(2B-1)")
    if reference.get("oracle_loss") is not None:
        left.axhline(reference["oracle_loss"], color="green", linestyle=":", label="oracle (latent attributes)")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    k = reference.get("recall_k", 100)
    series = [(f"val_R@{k}", f"val R@{k}")] + ([("val_R@10", "val R@10")] if k != 10 else [])
    series += [("knn_category", "kNN category"), ("knn_colour", "kNN colour"), ("probe_cosine", "probe mean cosine")]
    for key, label in series:
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if points:
            right.plot(*zip(*points), "o-", label=label)
    right.set_xlabel("step")
    right.set_ylim(-0.05, 1.05)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
