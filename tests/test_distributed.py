"""One run on several processes (gloo on the CPU): the exactness promise — a 2-process run equals
the 1-process run with the same global batch and seed, loss by loss and in test accuracy — for a
self-supervised method (images split, embeddings gathered, batch norm synchronised) and a
meta-learner (the tasks of a meta-batch split); what is recorded; and the refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.distributed import SINGLE, HarnessBatchNorm, World, replace_batchnorm
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.runner import check_world
from harness.store import read_losses, read_record

from conftest import one_error, run_cli

COMMON = ["train.log_every=1", "train.checkpoint_every=1000", "bench.episodes=60", "train.val_episodes=10"]
CASES = {  # method: (settings, steps run, steps compared to 1e-4, test accuracy compared)
    "protonet": (["train.batch_size=2", "method.train_ways=5", "method.train_queries=3"], 20, 20, True),
    # SimCLR on this conv4 turns any float32 rounding difference into ~1e-3 by step 3 and points of accuracy
    # by step 20 (results/README.md, "Several processes: how far they drift"; tests/perf/rounding_drift.py). So steps 1-2 are compared to 1e-4:
    # the first forward (shares, gathered embeddings, synchronised batch norm) and the first update
    # (averaged gradients); over 20 steps the 2-process run may drift no further than twice as far as the
    # 1-process run drifts from itself under a rounding-level change (oneDNN's convolutions off).
    # SGD: Adam's first steps are lr·sign(g), which turns rounding in a near-zero gradient element into
    # whole steps. exact_batchnorm: torch's CPU kernel rounds channels-last batch statistics by up to ~1e-4,
    # which the first update already shows.
    "simclr": (
        [
            "train.batch_size=32",
            "method.projection_hidden=64",
            "method.projection_dim=32",
            "train.optimizer=sgd",
            "train.lr=0.03",
            "train.exact_batchnorm=true",
        ],
        20,
        2,
        False,
    ),
}


def run(name: str, run_dir: Path, procs: int) -> dict:
    settings, steps, _, _ = CASES[name]
    sets = [a for s in [*COMMON, f"train.steps={steps}", *settings] for a in ("--set", s)]
    code = run_cli(
        "run",
        "--method",
        name,
        "--bench",
        "synthetic-5w1s",
        *sets,
        "--run-dir",
        run_dir,
        "--procs",
        str(procs),
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0
    return read_record(run_dir)


def mean_drift(a: list[float], b: list[float]) -> float:
    """The mean relative difference of two loss curves."""
    return sum(abs(x - y) / abs(x) for x, y in zip(a, b)) / len(a)


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_one_process_run(name, tmp_path):
    one, two = run(name, tmp_path / "one", 1), run(name, tmp_path / "two", 2)
    a, b = read_losses(tmp_path / "one"), read_losses(tmp_path / "two")
    _, steps, exact_steps, same_accuracy = CASES[name]
    assert len(a) == len(b) == steps
    assert all(abs(x - y) <= 1e-4 * abs(x) for x, y in zip(a[:exact_steps], b[:exact_steps])), list(zip(a, b))
    if exact_steps < steps:
        with torch.backends.mkldnn.flags(enabled=False):
            run(name, tmp_path / "rounded", 1)
        rounding = mean_drift(a, read_losses(tmp_path / "rounded"))
        assert mean_drift(a, b) <= 2 * rounding, (mean_drift(a, b), rounding)
    if same_accuracy:
        assert abs(one["accuracy"] - two["accuracy"]) <= 0.001
    assert (one["world_size"], one["backend"], len(one["devices"])) == (1, None, 1)
    assert (two["world_size"], two["backend"], len(two["devices"])) == (2, "gloo", 2)
    assert one["config_hash"] == two["config_hash"]  # the same run, made another way
    weights_one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    weights_two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    assert weights_one.keys() == weights_two.keys()  # the harness's batch norm keeps the checkpoint's layout


def test_shards_are_equal_shares_in_rank_order():
    items = torch.arange(12)
    assert [World(r, 3, "gloo").shard(items).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert SINGLE.shard(items) is items


def test_harness_batchnorm_is_batchnorm_and_keeps_its_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 36, 8),
        torch.nn.BatchNorm1d(8),
    )
    x = torch.randn(6, 1, 8, 8)
    net(x)  # move the running statistics away from their initial values
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expected = net.eval()(x)
    replaced = replace_batchnorm(net, synchronised=False)
    assert isinstance(replaced[1], HarnessBatchNorm) and isinstance(replaced[4], HarnessBatchNorm)
    assert all(torch.equal(before[k], v) for k, v in replaced.state_dict().items())
    assert torch.allclose(replaced.eval()(x), expected)
    # training: torch's statistics, and running statistics moved as torch moves them
    reference = torch.nn.BatchNorm2d(4)
    layer = replace_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), synchronised=False)[0]
    batch = 3 + 2 * torch.randn(10, 4, 5, 5)
    assert torch.allclose(layer.train()(batch), reference.train()(batch), atol=1e-5)
    assert torch.allclose(layer.running_mean, reference.running_mean) and torch.allclose(
        layer.running_var, reference.running_var
    )


def test_harness_batchnorm_is_accurate_on_channels_last_activations():
    """Activations in channels-last layout (a 1-channel image's conv output) with a mean far from 0: the
    statistics stay at float32 rounding."""
    torch.manual_seed(0)
    x = (2 + 0.1 * torch.randn(64, 8, 28, 28)).contiguous(memory_format=torch.channels_last)
    layer = replace_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(8)), synchronised=False)[0]
    xd = x.double()
    truth = (xd - xd.mean((0, 2, 3), keepdim=True)) / (xd.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert (layer.train()(x).double() - truth).abs().max() < 5e-6


@pytest.mark.parametrize(
    "name, sets, message",
    [
        ("moco", [], "runs on one process"),
        ("simclr", ["train.batch_size=33"], "train.batch_size=33 does not split into 2"),
        ("protonet", ["train.batch_size=3"], "train.batch_size=3 does not split into 2"),
        ("bmssl", ["method.adapt=all"], "adapt=all"),
    ],
)
def test_runs_that_cannot_split_are_refused(name, sets, message):
    with pytest.raises(ConfigError, match=message):
        check_world(resolve(name, "synthetic-5w1s", sets=sets), 2)


def test_procs_must_be_positive(runs_dir, capsys):
    assert (
        run_cli("run", "--method", "simclr", "--bench", "synthetic-5w1s", "--procs", "0", "--runs-dir", runs_dir) == 2
    )
    assert "--procs 0" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_procs_beyond_the_cpu_cores_are_refused(tmp_path, capsys):
    procs = (os.cpu_count() or 1) + 1
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--procs",
            str(procs),
            "--device",
            "cpu",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 2
    )
    assert "more processes than this machine's" in one_error(capsys) and not (tmp_path / "runs").exists()
