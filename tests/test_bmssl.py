"""BMSSL: tasks without labels, the documented special cases, the stop-gradient target, and
second- vs first-order meta-gradients against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import harness.methods.bmssl as bmssl_module
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

NO_AUGMENTATION = [
    "views.min_scale=1.0",
    "views.rr_prob=0",
    "views.cj_prob=0",
    "views.hf_prob=0",
    "views.random_gray_scale=0",
    "views.gaussian_blur=0",
]


def bmssl(*sets: str, name: str = "bmssl"):
    resolved = resolve(
        name, "synthetic-5w1s", sets=["train.batch_size=2", "method.ways=5", "method.views_per_image=3", *sets]
    )
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, None, None)
    method.setup(train)
    return method, train


def test_tasks_are_views_of_distinct_images_with_pseudo_labels():
    method, train = bmssl(*NO_AUGMENTATION)
    views = method.make_tasks(train, torch.Generator().manual_seed(0))
    assert views.shape == (2, 5, 3, 1, 28, 28)
    flat = views.flatten(3)
    assert torch.allclose(flat[:, :, 0], flat[:, :, 1]) and torch.allclose(
        flat[:, :, 0], flat[:, :, 2]
    )  # one image each
    assert len({tuple(v.tolist()) for v in flat[:, :, 0].reshape(10, -1)[:, ::40]}) == 10  # ten different images
    support, query = method.split(views)
    assert support.shape[1] == 5 and query.shape[1] == 10
    assert method.pseudo_labels(2, "cpu").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # by position, not by label


def fixed_views(method, train, seed=0):
    return method.make_tasks(train, torch.Generator().manual_seed(seed))


def test_lambda_zero_is_the_plain_bilevel_loss():
    method, train = bmssl(name="bmssl-noboot")
    views = fixed_views(method, train)
    losses = method.head_bilevel(views)
    assert losses["match_loss"].item() == 0.0
    out = method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))
    assert out["loss"].item() == pytest.approx(out["query_loss"].item())


def test_no_inner_steps_is_protonet_on_pseudo_classes():
    from harness.methods.protonet import prototype_logits

    method, train = bmssl("method.temperature=0.5", name="bmssl-noinner")
    method.cfg.bootstrap_weight = 0.0
    views = fixed_views(method, train)
    ours = method.head_bilevel(views)["query_loss"]
    z = method.embed_views(views.flatten(0, 2)).unflatten(0, views.shape[:3])
    support, query = method.split(z)
    by_hand = torch.stack(
        [
            F.cross_entropy(
                prototype_logits(support[t], method.pseudo_labels(1, "cpu"), query[t], method.cfg.ways) / 0.5,
                method.pseudo_labels(2, "cpu"),
            )
            for t in range(2)
        ]
    ).mean()
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("adapt", ["head", "all"])
def test_bootstrapped_target_receives_no_gradient(adapt, monkeypatch):
    method, train = bmssl(f"method.adapt={adapt}", "method.bootstrap_weight=0.5")
    targets = []
    original = bmssl_module.kl_to_target
    monkeypatch.setattr(
        bmssl_module, "kl_to_target", lambda target, logits: targets.append(target) or original(target, logits)
    )
    losses = method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))
    assert targets and all(t.grad_fn is None and not t.requires_grad for t in targets)
    assert losses["match_loss"] > 0


def query_loss_and_gradient(method, views, direction=None, eps=0.0):
    """Query loss (λ = 0) at θ + eps·direction, and its gradient at θ."""
    params = [p for p in method.parameters() if p.requires_grad]
    if direction is not None:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(eps * d)
    method.zero_grad()
    loss = method.head_bilevel(views)["query_loss"]
    loss.backward()
    gradient = [p.grad.clone() for p in params]
    if direction is not None:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(eps * d)
    return loss.item(), gradient


def directional(gradient, direction):
    return sum((g * d).sum() for g, d in zip(gradient, direction)).item()


def test_second_order_matches_finite_differences_and_first_order_does_not():
    method, train = bmssl("method.inner_steps=2", "method.inner_lr=2.0", "method.bootstrap_weight=0")
    method.double()
    method.eval()  # batch norm from running statistics: the loss is a fixed function of θ
    views = fixed_views(method, train).double()
    params = [p for p in method.parameters() if p.requires_grad]
    direction = [
        torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)
    ]
    norm = sum(d.pow(2).sum() for d in direction).sqrt()
    direction = [d / norm for d in direction]  # a unit step: small enough to cross no ReLU or max-pool kink
    _, second = query_loss_and_gradient(method, views)
    eps = 1e-6
    plus, _ = query_loss_and_gradient(method, views, direction, eps)
    minus, _ = query_loss_and_gradient(method, views, direction, -eps)
    finite = (plus - minus) / (2 * eps)
    assert directional(second, direction) == pytest.approx(finite, rel=1e-7)
    method.cfg.first_order = True
    _, first = query_loss_and_gradient(method, views)
    assert abs(directional(first, direction) - finite) > 1e-3 * abs(finite)
