"""Contrastive losses of NoteLLM-2: eq. 1 (and eq. 8, the same on visual embeddings) and eq. 9.

A batch holds 2B notes laid out as [q_1..q_B, t_1..t_B]: note i's positive is i+B (mod 2B).
With W processes, every process builds the full (W * 2B)^2 similarity matrix of all gathered notes
(as the official code does): the other shards arrive detached, the local shard is put back as the
local tensor and keeps its gradient. Every process then holds the same loss, and its gradient on
its own shard is exactly that shard's part of the single-process gradient over all W * 2B notes,
the repulsion from remote anchors included. DDP averages parameter gradients over processes, so
the training step scales the loss by W (and the temperature's gradient, whole on every process,
back by 1/W).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_local_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows, concatenated by rank, and the offset of this process's rows in them."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    shards = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(shards, local.detach().contiguous())
    shards[rank] = local
    return torch.cat(shards, dim=0), rank * local.shape[0]


def contrastive_loss(embeddings: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Eq. 1 over all gathered notes: mean over every note of -log softmax of its positive among all
    other notes (with one process: this process's 2B notes)."""
    count = embeddings.shape[0]
    if count % 2 or count < 2:
        raise ValueError(f"contrastive loss needs an even number (2B) of notes, got {count}")
    local = F.normalize(embeddings.float(), dim=-1)
    everyone, _ = gather_with_local_grad(local)
    logits = everyone @ everyone.T * tau.exp()
    rows = torch.arange(everyone.shape[0], device=local.device)
    self_mask = torch.eye(everyone.shape[0], dtype=torch.bool, device=local.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # j in [2B] \ {i}
    start = rows // count * count  # each process's shard keeps its own [q, t] layout
    positives = start + (rows - start + count // 2) % count
    return F.cross_entropy(logits, positives)


def micl_loss(visual: torch.Tensor, multimodal: torch.Tensor, tau: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 9: (L^v + alpha * L^m) / (1 + alpha)."""
    return (contrastive_loss(visual, tau) + alpha * contrastive_loss(multimodal, tau)) / (1 + alpha)
