"""ProtoNet and the MAML family: losses by hand, adaptation semantics and engine equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method


def test_protonet_logits_and_loss_by_hand():
    from harness.methods.protonet import prototype_logits

    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])  # prototypes (1, 0) and (0, 3)
    query = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    logits = prototype_logits(support, labels, query, 2)
    assert torch.allclose(logits, torch.tensor([[-1.0, -5.0], [-10.0, 0.0]]))
    loss = F.cross_entropy(logits, torch.tensor([0, 1]))
    by_hand = (
        -(
            torch.log(torch.exp(torch.tensor(-1.0)) / (torch.exp(torch.tensor(-1.0)) + torch.exp(torch.tensor(-5.0))))
            + torch.log(1 / (1 + torch.exp(torch.tensor(-10.0))))
        )
        / 2
    )
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


def maml_with_batch(*sets: str):
    resolved = resolve("maml", "synthetic-5w1s", sets=["method.train_queries=2", "train.batch_size=3", *sets])
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, data.train.labels, data.train.num_classes)
    method.setup(train)
    s, sl, q, ql = method.sampler.sample(torch.Generator().manual_seed(1), 3)
    return method, (method._normalize_tasks(train.images[s]), sl, method._normalize_tasks(train.images[q]), ql)


def test_maml_adaptation_changes_fast_weights_not_meta_parameters():
    method, (xs, ys, xq, yq) = maml_with_batch()
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    learner = method.adapt_task(xs[0], ys[0], steps=2, lr=0.4, first_order=False)
    assert all(not torch.equal(fast, meta) for fast, meta in zip(learner.parameters(), method.net.parameters()))
    assert all(torch.equal(before[k], v) for k, v in method.net.state_dict().items())
    F.cross_entropy(learner(xq[0]), yq[0]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())
    assert all(torch.equal(before[k], v) for k, v in method.net.state_dict().items())  # only the optimiser moves them


def meta_gradient(method, batch):
    xs, ys, xq, yq = batch
    method.net.zero_grad()
    logits = method.adapted_query_logits(
        xs, ys, xq, method.cfg.inner_steps, method.cfg.inner_lr, method.cfg.first_order
    )
    F.cross_entropy(logits.flatten(0, 1), yq.flatten()).backward()
    return torch.cat([p.grad.flatten() for p in method.net.parameters()])


def test_meta_gradient_matches_plain_autograd():
    """Second-order MAML through learn2learn equals differentiating one inner step by hand."""
    from torch.func import functional_call

    method, batch = maml_with_batch()
    method.double()
    xs, ys, xq, yq = (t.double() if t.is_floating_point() else t for t in batch)
    ours = meta_gradient(method, (xs, ys, xq, yq))
    method.net.zero_grad()
    params = dict(method.net.named_parameters())
    total = 0
    for t in range(len(xs)):
        support_loss = F.cross_entropy(functional_call(method.net, params, (xs[t],)), ys[t])
        grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=True)
        fast = {k: p - method.cfg.inner_lr * g for (k, p), g in zip(params.items(), grads)}
        total = total + F.cross_entropy(functional_call(method.net, fast, (xq[t],)), yq[t], reduction="sum")
    (total / yq.numel()).backward()
    reference = torch.cat([p.grad.flatten() for p in method.net.parameters()])
    assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-12)


def test_first_order_drops_second_order_terms():
    method, batch = maml_with_batch()
    second = meta_gradient(method, batch)
    method.cfg.first_order = True
    first = meta_gradient(method, batch)
    assert not torch.allclose(first, second, rtol=1e-2)
