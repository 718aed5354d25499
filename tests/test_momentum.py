"""The momentum-target layer (harness/momentum.py), for every registered method that has one: the cosine
schedule of the momentum, the update of each target from its online network, frozen targets outside the
optimiser, and the target names that committed checkpoints hold."""

from __future__ import annotations

import math

import pytest
import torch

from harness.method import TrainData
from harness.methods import METHODS
from harness.momentum import MomentumTargets
from harness.resolve import resolve, tiny_settings
from harness.runner import build_method

MOMENTUM_METHODS = [name for name in METHODS.names() if issubclass(METHODS.get(name).load(), MomentumTargets)]
# The targets' names in checkpoints of committed runs: they must keep loading.
COMMITTED_TARGETS = {
    "byol": {"target_encoder", "target_projection"},
    "moco": {"key_encoder", "key_projection"},
    "psco": {"key_encoder", "key_projection"},
    "dino": {"teacher_encoder", "teacher_head"},
}


def set_up(name: str, *sets: str):
    """The method as the runner builds it on synthetic-5w1s with its tiny settings, set up on unlabeled data."""
    resolved = resolve(name, "synthetic-5w1s", overrides=tiny_settings(name), sets=list(sets))
    method = build_method(resolved, 0, torch.device("cpu"))
    train = TrainData(resolved.benchmark.load(resolved.config).train.images, None, None)
    method.setup(train)
    return method, train


def test_every_method_with_committed_targets_has_the_layer():
    assert set(COMMITTED_TARGETS) <= set(MOMENTUM_METHODS)


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_targets_follow_their_online_networks_on_the_cosine_schedule(name):
    method, train = set_up(name, "method.momentum_base=0.9")
    assert method.momentum(0.0) == pytest.approx(0.9) and method.momentum(1.0) == pytest.approx(1.0)
    assert method.momentum(0.25) == pytest.approx(1 - 0.1 * (math.cos(math.pi * 0.25) + 1) / 2, rel=1e-4)
    pairs = [(getattr(method, online), getattr(method, target)) for online, target in method.momentum_pairs]
    with torch.no_grad():  # online and target differ before the update
        for online, _ in pairs:
            for p in online.parameters():
                p.add_(0.1)
    before = [
        ([p.detach().clone() for p in online.parameters()], [p.detach().clone() for p in target.parameters()])
        for online, target in pairs
    ]
    m = method.training_step(train, 50, 0.25, torch.Generator().manual_seed(0))["momentum"]
    assert m == pytest.approx(method.momentum(0.25))
    for (online, target), (_, new) in zip(before, pairs):
        for o, t, p in zip(online, target, new.parameters(), strict=True):
            assert torch.allclose(p, m * t + (1 - m) * o, atol=1e-6)


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_targets_are_frozen_copies_outside_the_optimiser(name):
    method, _ = set_up(name)
    trained = {id(p) for group in method.parameter_groups().values() for p in group}
    state = method.state_dict()
    for online_name, target_name in method.momentum_pairs:
        online, target = getattr(method, online_name), getattr(method, target_name)
        assert target is not online and all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
        assert not any(p.requires_grad or id(p) in trained for p in target.parameters())
        assert {k.removeprefix(f"{target_name}.") for k in state if k.startswith(f"{target_name}.")} == {
            k.removeprefix(f"{online_name}.") for k in state if k.startswith(f"{online_name}.")
        }
    if name in COMMITTED_TARGETS:
        assert {target for _, target in method.momentum_pairs} == COMMITTED_TARGETS[name]
