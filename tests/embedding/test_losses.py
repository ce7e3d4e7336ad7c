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


def test_two_processes_gather_negatives_and_keep_local_gradient():
    torch.manual_seed(2)
    world, per_rank = 2, 4
    shards = [torch.randn(per_rank, 5) for _ in range(world)]
    results = mp.Manager().dict()
    mp.spawn(distributed_loss_worker, args=(world, free_port(), shards, 3.0, results), nprocs=world, join=True)
    for rank in range(world):
        offset = rank * per_rank
        # rank's anchors against all 2 * per_rank notes of both processes
        local = shards[rank].clone().requires_grad_(True)
        others = [s if r != rank else local for r, s in enumerate(shards)]
        candidates = F.normalize(torch.cat(others), dim=-1)
        logits = F.normalize(local, dim=-1) @ candidates.T * math.exp(3.0)
        rows = torch.arange(per_rank)
        logits[rows, offset + rows] = float("-inf")
        expected = F.cross_entropy(logits, offset + (rows + per_rank // 2) % per_rank)
        expected.backward()
        loss, grad = results[rank]
        assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
        assert torch.allclose(grad, local.grad, atol=1e-6) and grad.abs().sum() > 0
        # and the loss really used the other process's notes: it differs from a local-only loss
        assert loss != pytest.approx(float(contrastive_loss(shards[rank], torch.tensor(3.0))), rel=1e-4)
