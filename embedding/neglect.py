"""The visual-neglect diagnostic of the paper (section 2.5, figures 3-4), per checkpoint.

Per LLM layer, over batches of related-note pairs:

- **attention shares** at the note embedding's position c (the last position): the attention
  that c pays to the image positions E_v, to the text positions E_t (j < c) and to itself,
  averaged over heads and notes. They sum to 1 by construction (one softmax row).
- **saliency shares** (eq. 3-6): I_l = sum_h |A_{h,l} * dL/dA_{h,l}| with L the training loss;
  S_v and S_t are the mean of I_l over (c, j), j in E_v resp. E_t, and S_o the mean over every other
  causal pair (i, j), j < i, i != c. Reported as relative sizes S / (S_v + S_t + S_o), as figure 3.

E_v holds the L_c visual positions; for mICL prompts also the visual compressed word (the
position whose state is n^v) and ``<IMG_EMB>``, as the paper's section 4.2 counts them. Padding
positions are excluded everywhere.

Image-alone recall: queries carry only their image (title, topics and content emptied), targets
and pool are whole notes; beside it, the recall of whole-note queries and of text-alone queries.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from embedding.batching import Pair, one_epoch
from embedding.inputs import NoteProcessor, PreparedBatch
from embedding.mlrm import MLRM

SHARES = ("image", "text", "other")


@dataclass
class PositionSets:
    """Boolean (B, T) masks of E_v and E_t, the real positions and the compressed position c = T - 1."""

    visual: torch.Tensor
    text: torch.Tensor
    real: torch.Tensor


def position_sets(batch: PreparedBatch) -> PositionSets:
    real = batch.attention_mask.bool()
    visual = batch.image_mask.clone()
    rows = torch.nonzero(batch.img_emb_index >= 0).flatten()
    for row in rows.tolist():
        index = int(batch.img_emb_index[row])
        visual[row, index] = True  # <IMG_EMB>
        visual[row, index - 1] = True  # the visual compressed word (its state is n^v)
    text = real & ~visual
    text[:, -1] = False  # c itself
    return PositionSets(visual & real, text, real)


def attention_shares(attentions: tuple[torch.Tensor, ...], sets: PositionSets) -> np.ndarray:
    """(layers, 3): mean share of c's attention row on E_v, on E_t, and on c itself."""
    out = []
    for layer in attentions:
        row = layer[:, :, -1, :].float()  # (B, H, T): attention of c
        visual = (row * sets.visual[:, None, :]).sum(-1)
        text = (row * sets.text[:, None, :]).sum(-1)
        total = row.sum(-1)
        other = total - visual - text
        out.append(torch.stack([visual, text, other], dim=-1).mean(dim=(0, 1)).detach().cpu().numpy())
    return np.stack(out)


def saliency_sums(attentions: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...],
                  sets: PositionSets) -> np.ndarray:
    """(layers, 3, 2): per layer and part (v, t, o), the sum of I_l and the count of its pairs."""
    length = sets.real.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool), diagonal=-1)  # j < i
    pair_ok = causal[None] & sets.real[:, :, None] & sets.real[:, None, :]  # (B, T, T)
    p_v = torch.zeros_like(pair_ok)
    p_t = torch.zeros_like(pair_ok)
    p_v[:, -1, :] = sets.visual
    p_t[:, -1, :] = sets.text
    p_v &= pair_ok
    p_t &= pair_ok
    p_o = pair_ok & ~p_v & ~p_t
    p_o[:, -1, :] = False  # the paper's P_o: every causal pair except those of c's row in P_v, P_t
    out = []
    for attention, grad in zip(attentions, grads):
        saliency = (attention.detach().float() * grad.float()).sum(dim=1).abs()  # |sum_h A * dL/dA|: (B, T, T)
        out.append([[float(saliency[mask].sum()), float(mask.sum())] for mask in (p_v, p_t, p_o)])
    return np.asarray(out)


def relative(sums: np.ndarray) -> np.ndarray:
    """(layers, 3) relative sizes of the means S_v, S_t, S_o (rows sum to 1)."""
    means = sums[..., 0] / np.maximum(sums[..., 1], 1)
    totals = means.sum(axis=1, keepdims=True)
    return np.divide(means, totals, out=np.full_like(means, 1 / 3), where=totals > 0)


@dataclass
class NeglectResult:
    attention: np.ndarray  # (layers, 3) image/text/other shares of c's attention
    saliency: np.ndarray  # (layers, 3) relative S_v, S_t, S_o
    notes: int
    batches: int
    recall: dict[str, dict[str, float]] = field(default_factory=dict)  # query kind -> R@k -> value

    def to_json(self) -> dict[str, Any]:
        return {"notes": self.notes, "batches": self.batches,
                "attention_shares": [dict(zip(SHARES, map(float, row))) for row in self.attention],
                "saliency_shares": [dict(zip(("S_v", "S_t", "S_o"), map(float, row))) for row in self.saliency],
                "recall": self.recall}


def sample_batches(pairs: list[Pair], batch_size: int, max_notes: int, seed: int = 0) -> list[list[Pair]]:
    batches = list(one_epoch(pairs, min(batch_size, len(pairs)), random.Random(seed), allow_partial=True))
    kept, notes = [], 0
    for batch in batches:
        if notes >= max_notes:
            break
        kept.append(batch)
        notes += 2 * len(batch)
    return kept


def measure_flow(model: MLRM, processor: NoteProcessor, notes: dict[str, dict], batches: list[list[Pair]],
                 device: torch.device) -> tuple[np.ndarray, np.ndarray, int]:
    """Attention shares and saliency shares per layer over the batches (eager attention, float32)."""
    from embedding.train import batch_loss

    model.to(device).eval()
    model.llm.set_attn_implementation("eager")
    attention_total, saliency_total, count = None, None, 0
    for batch in batches:
        ids = [q for q, _ in batch] + [t for _, t in batch]
        prepared = processor.prepare([notes[n] for n in ids]).to(device)
        out = model(prepared, output_attentions=True)
        loss = batch_loss(model, out)
        grads = torch.autograd.grad(loss, out.attentions)
        sets = position_sets(prepared)
        shares = attention_shares(out.attentions, sets) * len(ids)
        sums = saliency_sums(out.attentions, grads, sets)
        attention_total = shares if attention_total is None else attention_total + shares
        saliency_total = sums if saliency_total is None else saliency_total + sums
        count += len(ids)
        model.zero_grad(set_to_none=True)
    return attention_total / count, relative(saliency_total), count


def without_text(note: dict) -> dict:
    return {**note, "title": "", "topics": [], "content": ""}


def without_image(note: dict) -> dict:
    return {**note, "image": None}


def query_recalls(encoder, notes: dict[str, dict], pairs: list[Pair], ks: tuple[int, ...]) -> dict[str, dict]:
    """R@k of the pairs with whole, image-alone and text-alone queries against a pool of whole notes
    (the pool: every note of the pairs)."""
    pool_ids = sorted({n for pair in pairs for n in pair})
    position = {n: i for i, n in enumerate(pool_ids)}
    pool = torch.from_numpy(encoder.encode([notes[n] for n in pool_ids]))
    queries = np.array([position[q] for q, _ in pairs])
    targets = np.array([position[t] for _, t in pairs])
    result = {}
    kinds = {"whole note": None, "image alone": without_text}
    if encoder.config.uses_image:
        kinds["text alone"] = without_image
    for kind, transform in kinds.items():
        if transform is None:
            query_vectors = pool[queries]
        else:
            query_vectors = torch.from_numpy(encoder.encode([transform(notes[q]) for q, _ in pairs]))
        ranks = _ranks(query_vectors, pool, queries, targets)
        result[kind] = {f"R@{k}": float(np.mean(ranks <= min(k, len(pool_ids) - 1))) for k in ks}
    result["pool"] = {"notes": len(pool_ids), "pairs": len(pairs)}
    return result


def _ranks(query_vectors: torch.Tensor, pool: torch.Tensor, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target among the pool without the query note (ties counted against)."""
    scores = query_vectors @ pool.T
    rows = torch.arange(len(queries))
    scores[rows, torch.from_numpy(queries)] = -torch.inf
    target_scores = scores[rows, torch.from_numpy(targets)]
    return ((scores >= target_scores[:, None]).sum(dim=1)).numpy()
