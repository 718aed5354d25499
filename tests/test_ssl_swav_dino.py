"""SwAV, DINO and supervised pre-training (issue 19): losses against the papers' formulas written out
here in plain torch, the label-free guarantee (and labels for the supervised baseline), multi-crop,
short CLI runs and exact resume (DINO's centre and SwAV's prototype freezing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import RunRequest, build_method, execute
from harness.store import read_record, read_scores

from conftest import interrupt_at_step, only_run, run_cli, train_with_permuted_labels

FAST = ["train.steps=3", "train.batch_size=16", "bench.episodes=50", "train.val_episodes=10"]
MULTI_CROP = ["method.small_crops=2", "method.small_crop_size=16"]  # synthetic images are 28 px


def method_on_synthetic(name: str, *sets: str, labels: bool = False):
    resolved = resolve(name, "synthetic-5w1s", sets=["train.batch_size=16", *sets])
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config).train
    train = TrainData(data.images, data.labels, data.num_classes) if labels else TrainData(data.images, None, None)
    method.setup(train)
    return method, train


def fixed_views(sizes: list[int], batch: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(batch, 1, s, s, generator=generator).contiguous(memory_format=torch.channels_last) for s in sizes]


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
    method, _ = method_on_synthetic("swav", *MULTI_CROP, "method.prototypes=10")
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
    method, _ = method_on_synthetic("swav", "method.freeze_prototypes_fraction=0.25")
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


def test_dino_loss_centre_and_momentum_match_the_paper():
    method, _ = method_on_synthetic("dino", *MULTI_CROP, "method.output_dim=32")
    method.eval()
    with torch.no_grad():  # student and teacher differ before the update; the centre is not zero
        for p in method.encoder.parameters():
            p.add_(0.05)
        method.head.last_layer.weight_v.add_(0.1)
        method.criterion.center.copy_(torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(3)))
    center = method.criterion.center.clone()
    teacher_before = [p.detach().clone() for p in [*method.teacher_encoder.parameters(), *method.teacher_head.parameters()]]
    student = [p.detach().clone() for p in [*method.encoder.parameters(), *method.head.parameters()]]
    views = fixed_views([28, 28, 16, 16])
    progress = 0.15  # half-way through the teacher temperature's warm-up (30% of training)
    out = method.loss(views, progress)

    m = out["momentum"]
    assert m == pytest.approx(1 - (1 - 0.99) * (np.cos(np.pi * progress) + 1) / 2, rel=1e-4)
    for t, s, new in zip(teacher_before, student, [*method.teacher_encoder.parameters(), *method.teacher_head.parameters()]):
        assert torch.allclose(new, m * t + (1 - m) * s, atol=1e-6)
    assert out["teacher_temp"] == pytest.approx(0.04 + (0.07 - 0.04) * 0.5)
    with torch.no_grad():
        students = [method.head(method.encoder(v).flatten(1)) for v in views]
        teachers = [method.teacher_head(method.teacher_encoder(v).flatten(1)) for v in views[:2]]
    expected = dino_formula(teachers, students, center[0], out["teacher_temp"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(method.criterion.center[0], 0.9 * center[0] + 0.1 * torch.cat(teachers).mean(0, keepdim=True), atol=1e-6)
    assert "criterion.center" in method.state_dict()


def test_dino_teacher_temperature_warms_up_and_the_last_layer_is_frozen_first():
    method, _ = method_on_synthetic("dino", "method.freeze_last_layer_fraction=0.25", "method.output_dim=32")
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
    method, train = method_on_synthetic("supervised", labels=True)
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


@pytest.mark.parametrize("name", ["swav", "dino", "supervised"])
def test_labels_reach_only_the_supervised_baseline(name, tmp_path, monkeypatch):
    """swav and dino get no labels (permuting them changes nothing); supervised gets them (and learns from them)."""
    resolved = resolve(name, "synthetic-5w1s", sets=[
        "train.steps=2", "train.batch_size=8", "bench.episodes=5", "train.val_episodes=5"])
    seen, same = train_with_permuted_labels(resolved, tmp_path, monkeypatch)
    if name == "supervised":
        assert all(isinstance(labels, torch.Tensor) for labels in seen) and len(seen) == 2 and not same
    else:
        assert seen == [None, None] and same


# ------------------------------------------------------------------ configuration, CLI, resume
def test_small_crops_must_keep_the_feature_size():
    resolve("dino", "synthetic-5w1s", sets=MULTI_CROP)
    with pytest.raises(ConfigError, match="too small for the conv4"):
        resolve("swav", "synthetic-5w1s", sets=["method.small_crops=2"])  # 96/224 of 28 px: 12 px
    with pytest.raises(ConfigError, match="multi-crop needs one feature size"):
        resolve("swav", "synthetic-5w1s", sets=["method.small_crops=2", "data.image_size=84"])


@pytest.mark.parametrize("name, sets", [("swav", []), ("dino", MULTI_CROP), ("supervised", [])])
def test_short_cli_run(name, sets, runs_dir):
    args = [a for s in [*FAST, *sets] for a in ("--set", s)]
    assert run_cli("run", "--method", name, "--bench", "synthetic-5w1s", *args, "--runs-dir", runs_dir, "--no-progress") == 0
    record = read_record(only_run(runs_dir))
    assert record["status"] == "ok" and record["steps"] == 3 and 0 < record["accuracy"] <= 1
    if name == "supervised":  # a trained run scored again elsewhere: the classifier is rebuilt from the checkpoint
        assert run_cli("eval", "--run", only_run(runs_dir), "--bench", "synthetic-5w5s", "--runs-dir", runs_dir / "eval") == 0


@pytest.mark.parametrize("name, sets", [
    ("swav", [*MULTI_CROP, "method.freeze_prototypes_fraction=0.6"]),  # frozen until after the checkpoint
    ("dino", ["method.freeze_last_layer_fraction=0.6"]),
])
def test_resume_is_exact(name, sets, tmp_path, monkeypatch):
    resolved = resolve(name, "synthetic-5w1s", sets=[
        "train.steps=4", "train.checkpoint_every=2", "train.log_every=2", "train.batch_size=16", "bench.episodes=10",
        "train.val_episodes=5", *sets])
    straight = execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "straight", progress=False))
    restore = interrupt_at_step(monkeypatch, resolved.method_class, 3)
    with pytest.raises(KeyboardInterrupt):
        execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "resumed", progress=False))
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 2
    restore()
    resumed = execute(RunRequest(resolved, seed=3, run_dir=tmp_path / "resumed", resume=True, progress=False))
    assert resumed["status"] == "ok" and resumed["steps"] == 4
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if name == "dino":
        assert a["criterion.center"].abs().sum() > 0  # the centre moved, and resumed exactly
    assert np.array_equal(read_scores(tmp_path / "resumed")[1], read_scores(tmp_path / "straight")[1])
    assert straight["accuracy"] == resumed["accuracy"]
