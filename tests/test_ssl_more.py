"""MoCo v2, SimSiam, Barlow Twins and VICReg on lightly: each lightly loss against its paper's formula
written out in plain torch, the MoCo queue (FIFO, no self-negatives when symmetric, in checkpoints),
short runs through the CLI, label-free training and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.resolve import resolve
from harness.runner import RunRequest, build_method, execute
from harness.store import read_record, read_scores

from conftest import interrupt_at_step, only_run, run_cli, train_with_permuted_labels

METHODS = ["moco", "simsiam", "barlowtwins", "vicreg"]
SMALL = ["method.projection_hidden=64", "method.projection_dim=32"]  # fast, small heads for unit tests


def build(name: str, *sets: str):
    """The method as the runner builds it on synthetic-5w1s (presets applied), on the CPU."""
    return build_method(resolve(name, "synthetic-5w1s", sets=["train.batch_size=16", *sets]), 0, torch.device("cpu"))


def fixed(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def some_views(method, n: int = 8) -> list[torch.Tensor]:
    size = method.env.image_size
    return [fixed(n, method.env.channels, size, size, seed=s).contiguous(memory_format=torch.channels_last) for s in (1, 2)]


def off_diagonal_sum_of_squares(m: torch.Tensor) -> torch.Tensor:
    return (m ** 2).sum() - (m.diagonal() ** 2).sum()


# ---------------------------------------------------------------- the losses against the papers' formulas
def test_moco_infonce_with_a_queue_matches_the_paper():
    """He et al. eq. 1: L = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_queue exp(q·k/τ)) on unit vectors, τ = 0.2
    (v2); then the keys enter the queue in place of the oldest."""
    method = build("moco", "method.projection_dim=6", "method.queue_size=10")
    criterion, tau = method.criterion, 0.2
    assert criterion.temperature == tau
    queue = F.normalize(fixed(10, 6, seed=3), dim=1)
    criterion.memory_bank.bank.copy_(queue)
    criterion.memory_bank.bank_ptr.zero_()
    q, k = fixed(4, 6, seed=1).requires_grad_(), fixed(4, 6, seed=2)
    loss = criterion(q, k)

    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    positive = (qn * kn).sum(1) / tau
    negatives = qn @ queue.T / tau
    expected = (-positive + torch.log(torch.exp(positive) + torch.exp(negatives).sum(1))).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    bank = criterion.memory_bank.bank
    assert torch.allclose(bank[:4], kn, atol=1e-6) and torch.equal(bank[4:], queue[4:])
    assert int(criterion.memory_bank.bank_ptr) == 4


def test_moco_symmetric_loss_uses_the_queue_before_either_key_batch():
    """Symmetric MoCo: both views are queries against the other view's keys and the same (old) queue,
    so no image meets its own key as a negative; both key batches are enqueued afterwards."""
    method = build("moco", *SMALL, "method.queue_size=40", "method.symmetric=true")
    method.train()
    queue = method.criterion.memory_bank.bank.clone()
    views = some_views(method)
    loss = method.loss(views, 0.5)["loss"]
    with torch.no_grad():
        q = method.projection(method.encoder(torch.cat(views)).flatten(1))
        k = method.key_projection(method.key_encoder(torch.cat(views[::-1])).flatten(1))
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue.T], 1) / 0.2
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(16, dtype=torch.long)).item(), abs=1e-5)
    assert torch.allclose(method.criterion.memory_bank.bank[:16], kn, atol=1e-5)
    assert int(method.criterion.memory_bank.bank_ptr) == 16


def test_moco_momentum_update_and_queue_in_state_dict():
    method = build("moco", *SMALL, "method.queue_size=40", "method.momentum_base=0.9")
    method.train()
    assert method.momentum(0.0) == pytest.approx(0.9) and method.momentum(1.0) == pytest.approx(1.0)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.1)
    online = [p.detach().clone() for p in method.encoder.parameters()]
    key = [p.detach().clone() for p in method.key_encoder.parameters()]
    m = method.loss(some_views(method), 0.25)["momentum"]
    for o, k, new in zip(online, key, method.key_encoder.parameters()):
        assert torch.allclose(new, m * k + (1 - m) * o, atol=1e-6)
    assert not any(p.requires_grad for p in [*method.key_encoder.parameters(), *method.key_projection.parameters()])
    state = method.state_dict()
    assert int(state["criterion.memory_bank.bank_ptr"]) == 8  # the queue travels with the model
    fresh = build("moco", *SMALL, "method.queue_size=40", "method.momentum_base=0.9")
    assert not torch.equal(fresh.criterion.memory_bank.bank, method.criterion.memory_bank.bank)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.memory_bank.bank, method.criterion.memory_bank.bank)
    assert int(fresh.criterion.memory_bank.bank_ptr) == 8


def test_simsiam_negative_cosine_with_stop_gradient_matches_the_paper():
    """Chen & He eq. 2–4: L = ½ D(p₁, sg(z₂)) + ½ D(p₂, sg(z₁)), D(p, z) = −p/‖p‖ · z/‖z‖: the method's
    loss and its gradients equal that formula with the targets detached (and not the formula without)."""
    method = build("simsiam", *SMALL, "method.prediction_hidden=8")
    method.train()
    views = some_views(method)
    params = [p for group in method.parameter_groups().values() for p in group]
    out = method.loss(views, 0.0)
    grads = torch.autograd.grad(out["loss"], params)

    def direct(stop_gradient: bool):
        z = method.projection(method.encoder(torch.cat(views)).flatten(1))
        p0, p1 = method.prediction(z).chunk(2)
        z0, z1 = (z.detach() if stop_gradient else z).chunk(2)
        d = lambda p, t: -((p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))).mean()  # noqa: E731
        return 0.5 * d(p0, z1) + 0.5 * d(p1, z0)

    expected = direct(True)
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, torch.autograd.grad(expected, params)))
    without = torch.autograd.grad(direct(False), params)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, without))
    assert -1 <= out["loss"].item() <= 1 and 0 < out["z_std"].item() <= 1


def test_barlow_twins_cross_correlation_matches_the_paper():
    """Zbontar et al. eq. 1–2: C = Ẑ_Aᵀ Ẑ_B / N on embeddings normalised along the batch (as the authors'
    code, BatchNorm without affine: biased variance, ε = 1e-5); L = Σ(1 − C_ii)² + λ Σ_{i≠j} C_ij², λ = 5e-3."""
    method = build("barlowtwins", *SMALL)
    criterion, lam = method.criterion, 5e-3
    assert criterion.lambda_param == lam
    scale = torch.tensor([0.3, 1.0, 2.0, 0.7, 1.5])
    a, b = fixed(8, 5, seed=1) * scale + 1, fixed(8, 5, seed=2) * scale + fixed(8, 5, seed=1)

    def normalise(z):
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    c = normalise(a).T @ normalise(b) / len(a)
    expected = ((1 - c.diagonal()) ** 2).sum() + lam * off_diagonal_sum_of_squares(c)
    assert criterion(a, b).item() == pytest.approx(expected.item(), abs=1e-5)


def test_vicreg_matches_the_paper():
    """Bardes et al. eq. 1–6 with the authors' code's normalisation: λ·s + μ·(v(Z) + v(Z'))/2 + ν·(c(Z) + c(Z')),
    s = mean squared difference (over samples and dimensions), v = mean_j max(0, 1 − √(Var z_j + ε)),
    c = Σ_{i≠j} Cov(Z)_ij² / d; weights 25 / 25 / 1, ε = 1e-4."""
    method = build("vicreg", *SMALL)
    criterion = method.criterion
    lam, mu, nu, eps = 25.0, 25.0, 1.0, 1e-4
    assert (criterion.lambda_param, criterion.mu_param, criterion.nu_param, criterion.eps) == (lam, mu, nu, eps)
    scale = torch.tensor([0.3, 1.0, 2.0, 0.7, 1.5])  # some dimensions below the std target of 1, some above
    a, b = fixed(8, 5, seed=1) * scale, fixed(8, 5, seed=2) * scale + fixed(8, 5, seed=1) * scale
    n, d = a.shape

    def variance(z):
        return torch.clamp(1 - torch.sqrt(((z - z.mean(0)) ** 2).sum(0) / (n - 1) + eps), min=0).mean()

    def covariance(z):
        centred = z - z.mean(0)
        return off_diagonal_sum_of_squares(centred.T @ centred / (n - 1)) / d

    invariance = ((a - b) ** 2).sum() / (n * d)
    expected = lam * invariance + mu * (variance(a) + variance(b)) / 2 + nu * (covariance(a) + covariance(b))
    assert criterion(a, b).item() == pytest.approx(expected.item(), abs=1e-5)


# ---------------------------------------------------------------- through the runner
FAST = ["train.steps=3", "train.batch_size=16", "bench.episodes=50", "train.val_episodes=10"]


@pytest.mark.parametrize("name", METHODS)
def test_a_short_run_through_the_cli(name, runs_dir):
    args = [a for s in FAST for a in ("--set", s)]
    assert run_cli("run", "--method", name, "--bench", "synthetic-5w1s", *args, "--runs-dir", runs_dir, "--no-progress") == 0
    record = read_record(only_run(runs_dir))
    assert record["status"] == "ok" and record["steps"] == 3 and record["method"] == name
    assert math.isfinite(record["accuracy"]) and 0 < record["accuracy"] <= 1


@pytest.mark.parametrize("name", METHODS)
def test_training_never_sees_labels(name, tmp_path, monkeypatch):
    """The method gets no labels; permuting the training labels changes nothing."""
    resolved = resolve(name, "synthetic-5w1s", sets=["train.steps=3", "train.batch_size=8", "bench.episodes=20", *SMALL])
    assert resolved.method_class.uses_labels is False
    seen, same = train_with_permuted_labels(resolved, tmp_path, monkeypatch)
    assert seen == [None, None] and same


@pytest.mark.parametrize("name, sets", [
    ("moco", ["method.queue_size=40"]),  # 16 keys a step: the queue wraps around before and after the crash
    ("simsiam", []),
])
def test_resume_continues_exactly_where_it_stopped(name, sets, tmp_path, monkeypatch):
    resolved = resolve(name, "synthetic-5w1s", sets=[
        "train.steps=8", "train.checkpoint_every=3", "train.log_every=2", "bench.episodes=30", "train.val_episodes=10",
        "train.batch_size=16", *SMALL, *sets])
    straight = execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "straight", progress=False))

    restore = interrupt_at_step(monkeypatch, resolved.method_class, 7)
    with pytest.raises(KeyboardInterrupt):
        execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "resumed", progress=False))
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 6
    restore()
    resumed = execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "resumed", resume=True, progress=False))
    assert resumed["status"] == "ok" and resumed["steps"] == 8
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if name == "moco":
        assert "criterion.memory_bank.bank" in a
    assert np.array_equal(read_scores(tmp_path / "resumed")[1], read_scores(tmp_path / "straight")[1])
    assert straight["accuracy"] == resumed["accuracy"]
