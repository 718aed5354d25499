"""UMTRA and CACTUs: their tasks from unlabeled images, CACTUs' partitions and two training phases,
configuration errors and an embedding from a finished run (resume, labels, CLI: tests/test_method_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

from conftest import only_run, run_cli

NO_AUGMENTATION = [
    "views.min_scale=1.0",
    "views.rr_prob=0",
    "views.cj_prob=0",
    "views.hf_prob=0",
    "views.random_gray_scale=0",
    "views.gaussian_blur=0",
]
SMALL_ENCODER = ["method.encoder_batch_size=16", "method.partitions=3", "method.clusters=12"]
FAST = ["bench.episodes=20", "train.val_episodes=10"]


def built(name: str, *sets: str):
    resolved = resolve(name, "synthetic-5w1s", sets=list(sets))
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, None, None)
    method.setup(train)
    return method, train


# ---------------------------------------------------------------- UMTRA
def test_umtra_tasks_are_distinct_images_with_augmented_queries():
    method, train = built("umtra", "train.batch_size=3", "method.train_queries=2", *NO_AUGMENTATION)
    xs, ys, xq, yq = method.make_tasks(train, torch.Generator().manual_seed(0))
    assert xs.shape == (3, 5, 1, 28, 28) and xq.shape == (3, 10, 1, 28, 28)
    assert ys.tolist() == [[0, 1, 2, 3, 4]] * 3 and yq.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]] * 3
    # without augmentation each query is its class's support image, and the 15 images differ
    assert torch.allclose(xq, xs.repeat_interleave(2, dim=1), atol=1e-5)
    assert len({tuple(x.flatten()[::7].tolist()) for x in xs.flatten(0, 1)}) == 15


def test_umtra_queries_are_augmentations_of_the_support_image():
    method, train = built("umtra", "train.batch_size=2", "views.min_scale=0.5")
    xs, _, xq, _ = method.make_tasks(train, torch.Generator().manual_seed(0))
    assert not torch.allclose(xs, xq)  # augmented
    # each query is closer to its own support image than to the other classes' (on average)
    distance = torch.cdist(xq.flatten(2), xs.flatten(2))  # [B, N, N]
    assert (distance.argmin(-1) == torch.arange(5)).float().mean() > 0.6


def test_umtra_meta_loss_is_maml_on_its_tasks():
    method, train = built("umtra", "train.batch_size=2")
    out = method.training_step(train, 0, 0.0, torch.Generator().manual_seed(4))
    xs, ys, xq, yq = method.make_tasks(train, torch.Generator().manual_seed(4))
    assert out["loss"].item() == pytest.approx(method.loss(xs, ys, xq, yq)["loss"].item(), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.net.parameters())


def test_umtra_errors():
    with pytest.raises(ConfigError, match="train_shots"):
        resolve("umtra", "synthetic-5w1s", sets=["method.train_shots=2"])
    with pytest.raises(ConfigError, match="distinct training images"):
        built("umtra", "train.batch_size=2000")


# ---------------------------------------------------------------- CACTUs
def blobs(centres: int = 4, per: int = 25, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(centres), per)
    return rng.normal(size=(centres, dim))[truth] * 10 + rng.normal(size=(len(truth), dim)) * 0.1, truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings agree up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_cactus_partitions_recover_clusters_and_differ_by_scaling():
    method, _ = built("cactus-protonet", "method.partitions=3", "method.clusters=4", "method.train_ways=4")
    features, truth = blobs()
    partitions = method.make_partitions(features, seed=1)
    assert partitions.shape == (3, 100) and partitions.max() < 4
    assert all(same_partition(p.numpy(), truth) for p in partitions)  # well-separated blobs survive any scaling
    assert torch.equal(partitions, method.make_partitions(features, seed=1))  # deterministic in the seed
    method.cfg.clusters = 10
    many = method.make_partitions(blobs(centres=1, per=200)[0], seed=1)  # one blob: the scaling decides the cuts
    assert not all(same_partition(many[0].numpy(), p.numpy()) for p in many[1:])


def test_cactus_tasks_come_from_one_partition_each():
    method, _ = built(
        "cactus-protonet",
        "method.partitions=2",
        "method.clusters=6",
        "method.train_ways=3",
        "method.train_queries=2",
        "method.encoder_batch_size=16",
    )
    method.partition_labels.copy_(
        torch.stack(
            [torch.arange(len(method.partition_labels[0])) % 6, torch.arange(len(method.partition_labels[0])) // 600]
        )
    )
    sampler = method.task_sampler(3, 1, 2)
    support, support_labels, query, query_labels = sampler.sample(torch.Generator().manual_seed(0), 8)
    assert support.shape == (8, 3) and query.shape == (8, 6)
    for s, sl, q, ql in zip(support, support_labels, query, query_labels):
        # some partition gives every task's pseudo-class one cluster, different clusters different labels
        fits = [
            all(len({int(part[i]) for i in torch.cat([s[sl == c], q[ql == c]])}) == 1 for c in range(3))
            and len({int(part[s[c]]) for c in range(3)}) == 3
            for part in method.partition_labels
        ]
        assert any(fits)


def test_cactus_trains_the_encoder_first_then_the_meta_learner(monkeypatch):
    method, train = built(
        "cactus-protonet", "method.encoder_steps=2", "train.steps=4", "method.train_ways=5", *SMALL_ENCODER
    )
    generator = torch.Generator().manual_seed(0)
    embedding = {id(p) for p in method.embedding.parameters()}
    for step in range(4):
        method.zero_grad(set_to_none=True)
        method.training_step(train, step, step / 4, generator)["loss"].backward()
        moved = {id(p) for p in method.parameters() if p.grad is not None}
        assert moved and (moved <= embedding if step < 2 else not moved & embedding)
        assert (method.partition_labels >= 0).all() == (step >= 2)
    assert "partition_labels" in method.state_dict()


def test_cactus_errors(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        resolve("cactus-protonet", "synthetic-5w1s", sets=["method.encoder_steps=0"])
    with pytest.raises(ConfigError, match="no meta-training"):
        resolve("cactus-maml", "synthetic-5w1s", sets=["train.steps=300"])
    with pytest.raises(ConfigError, match="no checkpoint"):
        resolve("cactus-maml", "synthetic-5w1s", sets=["method.encoder_steps=0", f"method.encoder_run={tmp_path}"])
    with pytest.raises(ConfigError, match="method.clusters=12: a 20-way training task"):  # known before a run
        resolve("cactus-protonet", "synthetic-5w1s", sets=["method.train_ways=20", *SMALL_ENCODER])
    method, train = built(  # 12 clusters of the 3,200 images, ~270 each: some have fewer than 1 + 300 members
        "cactus-protonet",
        "method.encoder_steps=1",
        "train.steps=2",
        "method.train_ways=12",
        "method.train_queries=300",
        *SMALL_ENCODER,
    )
    with pytest.raises(ConfigError, match="lower method.clusters"):  # known only once the images are clustered
        method.training_step(train, 1, 0.5, torch.Generator().manual_seed(0))


def test_cactus_embedding_from_a_finished_simclr_run(runs_dir):
    args = ["--set", "train.steps=2", "--set", "train.batch_size=16", *[a for s in FAST for a in ("--set", s)]]
    assert (
        run_cli(
            "run", "--method", "simclr", "--bench", "synthetic-5w1s", *args, "--runs-dir", runs_dir, "--no-progress"
        )
        == 0
    )
    simclr_run = only_run(runs_dir)
    method, _ = built("cactus-protonet", "method.encoder_steps=0", f"method.encoder_run={simclr_run}")
    stored = torch.load(simclr_run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(v, stored[k]) for k, v in method.embedding.state_dict().items())
