"""PsCo: Sinkhorn-Knopp pseudo-labels and top-K shots against plain torch, the pseudo-supervised
contrastive loss against its formula, the FIFO queue in ``state_dict``, the one-shot identity special
case and the config checks (its momentum keys: tests/test_momentum.py; resume, labels, CLI:
tests/test_method_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.methods.psco import select_shots, sinkhorn_assignment, supcon_loss
from harness.resolve import resolve
from harness.runner import build_method

SMALL = ["method.projection_hidden=32", "method.projection_dim=16", "method.prediction_hidden=32"]


def build(*sets: str):
    """PsCo as the runner builds it on synthetic-5w1s (presets applied), on the CPU."""
    resolved = resolve("psco", "synthetic-5w1s", sets=["train.batch_size=8", *SMALL, *sets])
    return build_method(resolved, 0, torch.device("cpu"))


def fixed(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def some_views(method, n: int = 8) -> list[torch.Tensor]:
    size = method.env.image_size
    return [
        fixed(n, method.env.channels, size, size, seed=s).contiguous(memory_format=torch.channels_last) for s in (1, 2)
    ]


def sinkhorn_by_hand(similarity: torch.Tensor, iterations: int, epsilon: float) -> torch.Tensor:
    """Cuturi's Sinkhorn-Knopp as in the authors' code (``normalization='row'``): P = exp(S/ε) / ΣP, then
    alternately columns (queue entries) to 1/M and rows (images) to 1/N; finally ×N (rows sum to 1)."""
    n, m = similarity.shape
    p = torch.exp(similarity.double() / epsilon)
    p = p / p.sum()
    for _ in range(iterations):
        p = p / p.sum(0, keepdim=True) / m
        p = p / p.sum(1, keepdim=True) / n
    return (p * n).float()


# ---------------------------------------------------------------- pseudo-labels
def test_sinkhorn_assignment_is_balanced_and_shots_are_the_most_assigned_entries():
    keys = F.normalize(fixed(6, 5, seed=1), dim=1)
    queue = F.normalize(fixed(12, 5, seed=2), dim=1)
    sim = keys @ queue.T
    for iterations in (3, 50):
        p = sinkhorn_assignment(sim, iterations, 0.05)
        assert p.shape == (6, 12) and (p >= 0).all()
        assert torch.allclose(p, sinkhorn_by_hand(sim, iterations, 0.05), rtol=1e-4, atol=1e-6)
        assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-5)  # each image: one unit of assignment
    # Columns: balanced (each queue entry gets N/M) once Sinkhorn-Knopp has converged ...
    converged = sinkhorn_assignment(sim, 50, 0.05)
    assert torch.allclose(converged.sum(0), torch.full((12,), 6 / 12), atol=1e-3)
    # ... unlike the plain row-wise softmax it replaces, which piles onto some entries.
    softmax = torch.softmax(sim / 0.05, dim=1)
    assert (softmax.sum(0) - 0.5).abs().max() > 10 * (converged.sum(0) - 0.5).abs().max()

    shots = select_shots(converged, 3)
    order = converged.argsort(dim=1, descending=True)[:, :3]
    assert torch.equal(shots, order)
    for i in range(6):  # every chosen entry outranks every entry left out
        left = torch.ones(12, dtype=torch.bool)
        left[shots[i]] = False
        assert converged[i, shots[i]].min() > converged[i, left].max()


def test_one_shot_pseudo_labels_recover_the_batch_from_a_queue_of_its_own_keys():
    """Special case: with K = 1 and a queue (M = N) holding exactly the batch's keys in a shuffled order,
    each key's most similar entry is itself (cosine 1), and Sinkhorn-Knopp at small ε tends to the optimal
    transport plan, here that permutation (a doubly stochastic matrix, as M = N): every image's one shot is
    its own key's queue slot, i.e. the pseudo-labels recover the identity pairing."""
    method = build("method.queue_size=8", "method.shots=1", "method.sinkhorn_iterations=10")
    keys = F.normalize(fixed(8, 16, seed=4), dim=1)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(9))
    method.queue.copy_(keys[order])
    shots, assignment = method.pseudo_task(keys)
    assert shots.shape == (8, 1)
    assert torch.equal(order[shots[:, 0]], torch.arange(8))  # queue slot j holds key order[j]
    assert torch.allclose(assignment.sum(1), torch.ones(8), atol=1e-5)


# ---------------------------------------------------------------- the loss
def test_supcon_loss_matches_the_formula():
    """Paper eq. (PsCo loss): L = −1/N Σ_i 1/K Σ_k log exp(q_i·s_ik/τ) / Σ_j Σ_l exp(q_i·s_jl/τ)."""
    n, k, d, tau = 4, 3, 5, 0.5
    q = F.normalize(fixed(n, d, seed=1), dim=1).requires_grad_()
    s = F.normalize(fixed(n, k, d, seed=2), dim=2)
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp((q[i] @ s[j, l]).item() / tau) for j in range(n) for l in range(k))
        total += -sum(math.log(math.exp((q[i] @ s[i, kk]).item() / tau) / denominator) for kk in range(k)) / k
    loss = supcon_loss(q, s, tau)
    assert loss.item() == pytest.approx(total / n, abs=1e-5)
    # It is lowest when each query points at its own supports.
    aligned = F.normalize(s.mean(1), dim=1)
    assert supcon_loss(aligned, s, tau) < supcon_loss(aligned.roll(1, 0), s, tau)


def test_method_loss_is_pseudo_supcon_plus_moco_on_the_queue_before_the_update():
    method = build("method.queue_size=20", "method.shots=2", "method.supcon_temperature=0.7")
    method.train()
    queue = method.queue.clone()
    views = some_views(method)
    out = method.loss(views, 0.5)
    with torch.no_grad():
        q = F.normalize(method.prediction(method.projection(method.encoder(views[0]).flatten(1))), dim=1)
        z = F.normalize(method.key_projection(method.key_encoder(views[1]).flatten(1)), dim=1)
    p = sinkhorn_by_hand(z @ queue.T, 3, 0.05)
    shots = p.topk(2, dim=1).indices
    pseudo = supcon_loss(q, queue[shots], 0.7)
    logits = torch.cat([(q * z).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    moco = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    assert out["pseudo_loss"].item() == pytest.approx(pseudo.item(), abs=1e-4)
    assert out["moco_loss"].item() == pytest.approx(moco.item(), abs=1e-4)
    assert out["loss"].item() == pytest.approx((pseudo + moco).item(), abs=1e-4)
    assert out["loss"].requires_grad
    assert torch.allclose(method.queue[:8], z, atol=1e-5) and torch.equal(method.queue[8:], queue[8:])

    alone = build("method.queue_size=20", "method.moco_weight=0")
    alone.train()
    out = alone.loss(some_views(alone), 0.5)
    assert "moco_loss" not in out and out["loss"].item() == pytest.approx(out["pseudo_loss"].item())


# ---------------------------------------------------------------- the queue
def test_queue_is_fifo_wraps_around_and_is_in_state_dict():
    method = build("method.queue_size=10")
    initial = method.queue.clone()
    assert torch.allclose(initial.norm(dim=1), torch.ones(10))
    a, b = F.normalize(fixed(4, 16, seed=1), dim=1), F.normalize(fixed(8, 16, seed=2), dim=1)
    method.enqueue(a)
    assert torch.equal(method.queue[:4], a) and torch.equal(method.queue[4:], initial[4:])
    assert int(method.queue_ptr) == 4
    method.enqueue(b)  # 4..9, then wraps to 0..1 (the oldest, a's first two)
    assert torch.equal(method.queue[4:], b[:6]) and torch.equal(method.queue[:2], b[6:])
    assert torch.equal(method.queue[2:4], a[2:]) and int(method.queue_ptr) == 2

    state = method.state_dict()
    assert "queue" in state and "queue_ptr" in state
    fresh = build("method.queue_size=10")
    assert not torch.equal(fresh.queue, method.queue)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_ptr) == 2


@pytest.mark.parametrize(
    "sets, message",
    [
        (["method.queue_size=4", "method.shots=5"], "method.shots"),
        (["method.queue_size=4"], "train.batch_size"),
        (["train.batch_size=1"], "at least 2"),
    ],
)
def test_config_checks(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve("psco", "synthetic-5w1s", sets=["train.batch_size=8", *sets])
