"""Every trained method's loss against its paper's formula, written out here in plain torch: the
self-supervised losses on lightly (NT-Xent, BYOL, MoCo's InfoNCE with a queue, SimSiam, Barlow Twins,
VICReg, SwAV, DINO), the MoCo queue, SwAV's prototype and DINO's last-layer freezing, DINO's teacher
temperature, multi-crop's feature-size check and the supervised baseline's cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

SMALL = ["method.projection_hidden=64", "method.projection_dim=32"]  # fast, small heads for unit tests
MULTI_CROP = ["method.small_crops=2", "method.small_crop_size=16"]  # synthetic images are 28 px


def build(name: str, *sets: str):
    """The method as the runner builds it on synthetic-5w1s (presets applied), on the CPU."""
    return build_method(resolve(name, "synthetic-5w1s", sets=["train.batch_size=16", *sets]), 0, torch.device("cpu"))


def set_up(name: str, *sets: str, labels: bool = False):
    """``build``, then set up on the training data (with its labels only when asked): (method, data)."""
    resolved = resolve(name, "synthetic-5w1s", sets=["train.batch_size=16", *sets])
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config).train
    train = TrainData(data.images, data.labels, data.num_classes) if labels else TrainData(data.images, None, None)
    method.setup(train)
    return method, train


def fixed(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def some_views(method, n: int = 8) -> list[torch.Tensor]:
    size = method.env.image_size
    return [
        fixed(n, method.env.channels, size, size, seed=s).contiguous(memory_format=torch.channels_last) for s in (1, 2)
    ]


def fixed_views(sizes: list[int], batch: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [
        torch.randn(batch, 1, s, s, generator=generator).contiguous(memory_format=torch.channels_last) for s in sizes
    ]


def off_diagonal_sum_of_squares(m: torch.Tensor) -> torch.Tensor:
    return (m**2).sum() - (m.diagonal() ** 2).sum()


# ---------------------------------------------------------------- SimCLR, BYOL
def test_ntxent_prefers_matching_views():
    from lightly.loss import NTXentLoss

    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    other = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    criterion = NTXentLoss(temperature=0.5)
    assert criterion(z, z + 0.01 * other) < criterion(z, other) - 1.0


def test_byol_loss_prefers_matching_views():
    from lightly.loss import NegativeCosineSimilarity

    criterion = NegativeCosineSimilarity()
    p = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    assert criterion(p, p).item() == pytest.approx(-1.0)
    assert criterion(p, p) < criterion(p, z) - 0.5


# ---------------------------------------------------------------- MoCo
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


def test_moco_queue_is_in_state_dict():
    method = build("moco", *SMALL, "method.queue_size=40")
    method.train()
    method.loss(some_views(method), 0.25)
    state = method.state_dict()
    assert int(state["criterion.memory_bank.bank_ptr"]) == 8  # the queue travels with the model
    fresh = build("moco", *SMALL, "method.queue_size=40")
    assert not torch.equal(fresh.criterion.memory_bank.bank, method.criterion.memory_bank.bank)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.memory_bank.bank, method.criterion.memory_bank.bank)
    assert int(fresh.criterion.memory_bank.bank_ptr) == 8


# ---------------------------------------------------------------- SimSiam, Barlow Twins, VICReg
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


# ------------------------------------------------------------------ SwAV
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Caron et al. 2020, Algorithm 1 / their code: codes Q [B, K] with equal prototype mass."""
    q = torch.exp(scores / epsilon).t()  # K × B
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k  # each prototype gets 1/K of the mass
        q = q / q.sum(dim=0, keepdim=True) / b  # each sample 1/B
    return (q * b).t()  # each sample's code sums to 1


def swav_formula(full: list[torch.Tensor], small: list[torch.Tensor], temperature, epsilon, iterations):
    """Swapped prediction: each global view's codes predicted from every other view, averaged."""
    views = full + small
    total = 0.0
    for i, scores in enumerate(full):
        q = sinkhorn_knopp(scores, epsilon, iterations)
        terms = [-(q * F.log_softmax(views[v] / temperature, dim=1)).sum(1).mean() for v in range(len(views)) if v != i]
        total = total + sum(terms) / (len(views) - 1)
    return total / len(full)


def test_sinkhorn_codes_are_equipartitioned():
    scores = F.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    q = sinkhorn_knopp(scores, 0.05, 200)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0), atol=1e-3)  # B/K samples per prototype


def test_swav_loss_matches_the_papers_formula():
    method, _ = set_up("swav", *MULTI_CROP, "method.prototypes=10")
    method.eval()  # batch norm from running statistics: each image's output is its own
    with torch.no_grad():
        method.prototypes.heads[0].weight.mul_(3.0)  # off the unit sphere: the step re-normalises them
    views = fixed_views([28, 28, 16, 16])
    out = method.loss(views, 0.5)
    weight = method.prototypes.heads[0].weight
    assert method.prototypes.heads[0].bias is None
    assert torch.allclose(weight.norm(dim=1), torch.ones(10), atol=1e-6)
    with torch.no_grad():
        scores = [F.normalize(method.projection(method.encoder(v).flatten(1)), dim=1) @ weight.t() for v in views]
    expected = swav_formula(scores[:2], scores[2:], 0.1, 0.05, 3)
    assert out["loss"].shape == () and out["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_swav_prototypes_are_frozen_early_in_training():
    method, _ = set_up("swav", "method.freeze_prototypes_fraction=0.25")
    views = fixed_views([28, 28])
    for progress, frozen in ((0.0, True), (0.2, True), (0.3, False)):
        method.zero_grad(set_to_none=True)
        method.loss(views, progress)["loss"].backward()
        assert (method.prototypes.heads[0].weight.grad is None) == frozen
        assert all(p.grad is not None for p in method.projection.parameters())


# ------------------------------------------------------------------ DINO
def dino_formula(teacher, student, center, teacher_temp, student_temp=0.1):
    """Caron et al. 2021, Algorithm 1 with multi-crop: H(P_t(x), P_s(x')) over every teacher view x
    and every other student view x', the teacher centred and sharpened."""
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        p_t = F.softmax((t - center) / teacher_temp, dim=1)
        for v, s in enumerate(student):
            if v != i:
                total = total - (p_t * F.log_softmax(s / student_temp, dim=1)).sum(1).mean()
                terms += 1
    return total / terms


def test_dino_loss_and_centre_match_the_paper():
    method, _ = set_up("dino", *MULTI_CROP, "method.output_dim=32")
    method.eval()
    with torch.no_grad():  # student and teacher differ; the centre is not zero
        for p in method.encoder.parameters():
            p.add_(0.05)
        method.head.last_layer.weight_v.add_(0.1)
        method.criterion.center.copy_(torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(3)))
    center = method.criterion.center.clone()
    views = fixed_views([28, 28, 16, 16])
    progress = 0.15  # half-way through the teacher temperature's warm-up (30% of training)
    out = method.loss(views, progress)
    # (the teacher moved towards the student first: tests/test_momentum.py)
    assert out["teacher_temp"] == pytest.approx(0.04 + (0.07 - 0.04) * 0.5)
    with torch.no_grad():
        students = [method.head(method.encoder(v).flatten(1)) for v in views]
        teachers = [method.teacher_head(method.teacher_encoder(v).flatten(1)) for v in views[:2]]
    expected = dino_formula(teachers, students, center[0], out["teacher_temp"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(
        method.criterion.center[0], 0.9 * center[0] + 0.1 * torch.cat(teachers).mean(0, keepdim=True), atol=1e-6
    )
    assert "criterion.center" in method.state_dict()


def test_dino_teacher_temperature_warms_up_and_the_last_layer_is_frozen_first():
    method, _ = set_up("dino", "method.freeze_last_layer_fraction=0.25", "method.output_dim=32")
    assert method.teacher_temperature(0.0) == pytest.approx(0.04)
    assert method.teacher_temperature(0.3) == method.teacher_temperature(0.9) == pytest.approx(0.07)
    assert all(not p.requires_grad for p in [*method.teacher_encoder.parameters(), *method.teacher_head.parameters()])
    views = fixed_views([28, 28])
    for progress, frozen in ((0.0, True), (0.3, False)):
        method.zero_grad(set_to_none=True)
        method.loss(views, progress)["loss"].backward()
        assert (method.head.last_layer.weight_v.grad is None) == frozen
        assert method.head.last_layer.weight_g.grad is None  # the last layer's norms stay 1
        assert method.head.layers[0].weight.grad is not None


# ------------------------------------------------------------------ supervised
def test_supervised_loss_is_cross_entropy_over_all_training_classes():
    method, train = set_up("supervised", labels=True)
    assert method.classifier.out_features == train.num_classes == int(train.labels.max()) + 1
    images = method.normalize(train.images[:10])
    labels = train.labels[:10]
    out = method.loss(images, labels)
    with torch.no_grad():
        logits = method.encoder(images).flatten(1) @ method.classifier.weight.t() + method.classifier.bias
    by_hand = (torch.logsumexp(logits, 1) - logits[torch.arange(10), labels]).mean()
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    step = method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))
    assert torch.isfinite(step["loss"]) and 0 <= step["accuracy"] <= 1


# ------------------------------------------------------------------ multi-crop
def test_small_crops_must_keep_the_feature_size():
    resolve("dino", "synthetic-5w1s", sets=MULTI_CROP)
    with pytest.raises(ConfigError, match="too small for the conv4"):
        resolve("swav", "synthetic-5w1s", sets=["method.small_crops=2"])  # 96/224 of 28 px: 12 px
    with pytest.raises(ConfigError, match="multi-crop needs one feature size"):
        resolve("swav", "synthetic-5w1s", sets=["method.small_crops=2", "data.image_size=84"])
