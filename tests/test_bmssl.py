"""BMSSL: tasks without labels, the documented special cases, the stop-gradient target, and
second- vs first-order meta-gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import harness.methods.bmssl as bmssl_module
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

from conftest import bmssl_proto

NO_AUGMENTATION = [
    "views.min_scale=1.0",
    "views.rr_prob=0",
    "views.cj_prob=0",
    "views.hf_prob=0",
    "views.random_gray_scale=0",
    "views.gaussian_blur=0",
]


def bmssl(*sets: str, name: str = "bmssl"):
    # the bmssl-proto settings, which the special-case tests below were written for; the tests of the new
    # first level and target override them
    resolved = resolve(
        name,
        "synthetic-5w1s",
        sets=[*bmssl_proto(name), "train.batch_size=2", "method.ways=5", "method.views_per_image=3", *sets],
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


# ------------------------------------------------------------------ the mechanisms, measured

NEW_FIRST_LEVEL = [
    "method.head_init=zero",
    "method.inner_lr_units=logit",
    "method.inner_lr=2.0",
    "method.inner_steps=3",
    "method.center=true",
    "method.target_views=1",
    "method.target_steps=2",
]


def diagnosed(method, views):
    method.diagnose = True
    try:
        return method.loss(views)
    finally:
        method.diagnose = False


def test_each_diagnostic_against_a_hand_computation():
    method, train = bmssl(*NEW_FIRST_LEVEL, "method.bootstrap_weight=0.5")
    method.eval()
    views = fixed_views(method, train)
    out = diagnosed(method, views)
    # by hand: embed, centre on the support mean, K plain gradient steps of α·N on the mean support loss
    n, alpha = method.cfg.ways, 2.0 * method.cfg.ways
    z = method.embed_views(views[:, :, :3].flatten(0, 2)).unflatten(0, (2, n, 3))
    support, query = z[:, :, 0], z[:, :, 1:].flatten(1, 2)
    mean = support.mean(1, keepdim=True)
    support, query = F.normalize(support - mean, dim=-1), F.normalize(query - mean, dim=-1)
    ys, yq = torch.arange(n), torch.arange(n).repeat_interleave(2)
    heads = []
    for t in range(2):
        w = torch.zeros(n, support.shape[-1], requires_grad=True)
        b = torch.zeros(n, requires_grad=True)
        w0, b0 = w, b
        for _ in range(3):
            gw, gb = torch.autograd.grad(F.cross_entropy(support[t] @ w.T + b, ys), (w, b), create_graph=True)
            w, b = w - alpha * gw, b - alpha * gb
        heads.append((w0, b0, w, b))
    ce = lambda x, y, w, b: F.cross_entropy(x @ w.T + b, y)  # noqa: E731
    query_init = torch.stack([ce(query[t], yq, h[0], h[1]) for t, h in enumerate(heads)]).mean()
    query_adapted = torch.stack([ce(query[t], yq, h[2], h[3]) for t, h in enumerate(heads)]).mean()
    support_adapted = torch.stack([ce(support[t], ys, h[2], h[3]) for t, h in enumerate(heads)]).mean()
    assert out["support_loss_init"].item() == pytest.approx(math.log(n), rel=1e-5)  # a zero head: uniform
    assert out["support_loss_adapted"].item() == pytest.approx(support_adapted.item(), rel=1e-4)
    assert out["inner_gain"].item() == pytest.approx((query_init - query_adapted).item(), rel=1e-4)
    # the target: its own future views, L more steps, one query step; shift and KL on the queries
    future = method.embed_views(views[:, :, 3].flatten(0, 1)).unflatten(0, (2, n))
    future = F.normalize(future - mean, dim=-1)
    shifts, kls = [], []
    for t, (_, _, w, b) in enumerate(heads):
        w, b = w.detach(), b.detach()
        xs, ys2 = torch.cat([support[t], future[t]]).detach(), torch.cat([ys, ys])
        for x, y in [(xs, ys2), (xs, ys2), (query[t].detach(), yq)]:
            w, b = w.requires_grad_(), b.requires_grad_()
            gw, gb = torch.autograd.grad(ce(x, y, w, b), (w, b))
            w, b = (w - alpha * gw).detach(), (b - alpha * gb).detach()
        learner = query[t] @ heads[t][2].T + heads[t][3]
        target = query[t] @ w.T + b
        shifts.append((target - learner).abs().max())
        kls.append(F.kl_div(F.log_softmax(learner, -1), F.softmax(target, -1), reduction="batchmean"))
    assert out["target_shift"].item() == pytest.approx(torch.stack(shifts).max().item(), rel=1e-4)
    assert out["match_kl"].item() == pytest.approx(torch.stack(kls).mean().item(), rel=1e-4)
    # the gradient ratio: the two weighted terms' gradient norms over the meta-parameters
    params = [p for p in method.parameters() if p.requires_grad]
    norm = lambda term: torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(term, params, retain_graph=True)))  # noqa: E731
    losses = method.head_bilevel(views)
    expected = norm(0.5 * losses["match_loss"]) / norm(0.5 * losses["query_loss"])
    assert out["grad_ratio"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_a_prototype_head_on_one_support_view_gains_nothing_from_its_inner_step():
    """The old preset's first level is inert by construction: each support view is its own prototype."""
    method, train = bmssl("method.temperature=0.05", "method.inner_lr=0.5", "method.support_views=1")
    out = diagnosed(method, fixed_views(method, train))
    assert out["support_loss_init"].item() < 0.1 and abs(out["inner_gain"].item()) < 1e-3


def test_the_new_first_level_adapts_and_its_target_teaches():
    method, train = bmssl(*NEW_FIRST_LEVEL, "method.bootstrap_weight=0.5")
    out = diagnosed(method, fixed_views(method, train))
    assert out["inner_gain"].item() > 0.05 and out["support_loss_adapted"] < out["support_loss_init"]
    assert out["match_kl"].item() > 1e-3 and out["grad_ratio"].item() > 0.1


def test_the_target_sees_views_the_first_level_does_not():
    """Changing only the target's own views changes the target, never the learner's adapted predictions."""
    method, train = bmssl(*NEW_FIRST_LEVEL, "method.bootstrap_weight=0.5")
    method.eval()
    views = fixed_views(method, train)
    other = views.clone()
    other[:, :, 3] = fixed_views(method, train, seed=1)[:, :, 3]  # other images as the target's views
    first, second = diagnosed(method, views), diagnosed(method, other)
    assert first["query_loss"].item() == second["query_loss"].item()
    assert first["inner_gain"].item() == second["inner_gain"].item()
    assert first["match_kl"].item() != pytest.approx(second["match_kl"].item(), rel=1e-3)


def test_learned_inner_rates_are_meta_parameters_that_get_a_gradient():
    method, train = bmssl(*NEW_FIRST_LEVEL, "method.learn_inner_lr=true")
    assert method.log_inner_lr.shape == (3, 2)
    out = method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert method.log_inner_lr.grad is not None and method.log_inner_lr.grad.abs().sum() > 0


def test_the_floors_warn_only_for_mechanisms_switched_on(tmp_path):
    from harness import mechanisms

    log = tmp_path / "train_log.csv"
    log.write_text("step,inner_gain,match_kl\n10,0.5,1e-6\n20,0.4,2e-6\n30,0.3,1e-6\n", encoding="utf-8")
    cls = bmssl_module.BMSSL
    cfg = cls.Config(inner_steps=1, bootstrap_weight=0.5)
    summary = mechanisms.summary(log, cls, cfg, 30)
    assert summary["mechanisms"] == {"inner_gain": 0.35, "match_kl": 1.5e-6}  # medians past step 15
    assert len(summary["warnings"]) == 1 and "match_kl" in summary["warnings"][0]
    assert mechanisms.summary(log, cls, cls.Config(inner_steps=1, bootstrap_weight=0.0), 30)["warnings"] == []
