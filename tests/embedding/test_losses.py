import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from embedding.losses import contrastive_loss, micl_loss
from embedding.testing import distributed_loss_worker
from tests.conftest import free_port


def direct_eq1(notes: torch.Tensor, tau: float, positive_of) -> float:
    """Eq. 1 written out term by term: -1/2B sum_i log(e^{sim(i,i+)e^tau} / sum_{j != i} e^{sim(i,j)e^tau})."""
    n = notes.shape[0]
    total = 0.0
    for i in range(n):
        sim = lambda a, b: float(F.cosine_similarity(notes[a], notes[b], dim=0))
        numerator = math.exp(sim(i, positive_of(i)) * math.exp(tau))
        denominator = sum(math.exp(sim(i, j) * math.exp(tau)) for j in range(n) if j != i)
        total += math.log(numerator / denominator)
    return -total / n


def test_eq1_matches_direct_computation():
    torch.manual_seed(0)
    notes = torch.randn(6, 5)
    loss = contrastive_loss(notes, torch.tensor(3.0))
    assert float(loss) == pytest.approx(direct_eq1(notes, 3.0, lambda i: (i + 3) % 6), rel=1e-5)


def test_eq9_weights_visual_and_multimodal_losses():
    torch.manual_seed(1)
    visual, multimodal = torch.randn(4, 3), torch.randn(4, 3)
    positive = lambda i: (i + 2) % 4
    expected = (direct_eq1(visual, 3.0, positive) + 9 * direct_eq1(multimodal, 3.0, positive)) / 10
    assert float(micl_loss(visual, multimodal, torch.tensor(3.0), 9.0)) == pytest.approx(expected, rel=1e-5)


def test_temperature_is_learnable_and_scales_logits():
    notes = torch.randn(4, 3)
    tau = torch.tensor(3.0, requires_grad=True)
    contrastive_loss(notes, tau).backward()
    assert tau.grad is not None and tau.grad != 0
    assert float(contrastive_loss(notes, torch.tensor(0.0))) != pytest.approx(float(contrastive_loss(notes, tau).detach()))


def test_odd_batch_is_refused():
    with pytest.raises(ValueError, match="even number"):
        contrastive_loss(torch.randn(3, 2), torch.tensor(3.0))


def test_two_processes_give_the_gradient_of_one_process_over_all_notes():
    """Each process holds 2B notes [q, t]; together they must behave as one process over the 2BW notes
    [all q, all t]: the same loss everywhere, and each shard's gradient equals its rows of the
    single-process gradient (the repulsion from remote anchors included)."""
    torch.manual_seed(2)
    world, per_rank, pairs = 2, 6, 3
    shards = [torch.randn(per_rank, 5) for _ in range(world)]
    results = mp.Manager().dict()
    mp.spawn(distributed_loss_worker, args=(world, free_port(), shards, 3.0, results), nprocs=world, join=True)
    # the single process's batch: queries of both shards, then their targets, in the same order
    order = [r * per_rank + i for r in range(world) for i in range(pairs)] + \
            [r * per_rank + pairs + i for r in range(world) for i in range(pairs)]
    everyone = torch.cat(shards)[order].clone().requires_grad_(True)
    tau = torch.tensor(3.0, requires_grad=True)
    single = contrastive_loss(everyone, tau)
    single.backward()
    grad_by_note = torch.zeros_like(everyone)
    grad_by_note[order] = everyone.grad
    for rank in range(world):
        loss, grad, tau_grad = results[rank]
        assert loss == pytest.approx(float(single.detach()), rel=1e-5)
        assert torch.allclose(grad, grad_by_note[rank * per_rank:(rank + 1) * per_rank], atol=1e-6)
        assert tau_grad == pytest.approx(float(tau.grad), rel=1e-5)
    # the remote anchors' term matters: an anchors-local-only loss gives a different gradient
    local = shards[0].clone().requires_grad_(True)
    candidates = F.normalize(torch.cat([local, shards[1]]), dim=-1)
    logits = F.normalize(local, dim=-1) @ candidates.T * math.exp(3.0)
    rows = torch.arange(per_rank)
    logits[rows, rows] = float("-inf")
    F.cross_entropy(logits, (rows + pairs) % per_rank).backward()
    assert not torch.allclose(local.grad, results[0][1], atol=1e-4)
