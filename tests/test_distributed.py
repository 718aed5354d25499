"""One run on several processes (gloo on the CPU): the exactness promise — a 2-process run equals
the 1-process run with the same global batch and seed, loss by loss and in test accuracy — for a
self-supervised method (images split, embeddings gathered, batch norm synchronised) and a
meta-learner (the tasks of a meta-batch split); what is recorded; and the refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from harness.distributed import SINGLE, SyncedBatchNorm, World, synchronise_batchnorm
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.runner import check_world
from harness.store import read_record

from conftest import run_cli

STEPS = 20
COMMON = [f"train.steps={STEPS}", "train.log_every=1", "train.checkpoint_every=1000", "bench.episodes=60",
          "train.val_episodes=10"]
CASES = {
    # SGD: Adam's first steps are lr·sign(g), so float32 rounding in a near-zero gradient element (the
    # conv biases before batch norm) flips whole steps; SGD keeps rounding at rounding size (README)
    "simclr": ["train.batch_size=32", "method.projection_hidden=64", "method.projection_dim=32",
               "train.optimizer=sgd", "train.lr=0.03"],
    "protonet": ["method.meta_batch=2", "method.train_ways=5", "method.train_queries=3"],
}


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "train_log.csv", newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def run(name: str, run_dir: Path, procs: int) -> dict:
    sets = [a for s in [*COMMON, *CASES[name]] for a in ("--set", s)]
    code = run_cli("run", "--method", name, "--bench", "synthetic-5w1s", *sets, "--run-dir", run_dir, "--procs",
                   str(procs), "--device", "cpu", "--no-progress")
    assert code == 0
    return read_record(run_dir)


@pytest.mark.parametrize("name", [
    "protonet",
    # Open (issue 16): the first step's loss agrees (3.5866423 vs 3.5866425) but the embeddings after the
    # synchronised batch norm differ by up to 3.6e-4 on real views (not on random inputs, not in float64),
    # and the losses from step 2 on by ~2e-3 relative. Strict: the day it passes, this mark must go.
    pytest.param("simclr", marks=pytest.mark.xfail(strict=True, reason="synchronised batch norm not yet exact on real views")),
])
def test_two_processes_give_the_one_process_run(name, tmp_path):
    one, two = run(name, tmp_path / "one", 1), run(name, tmp_path / "two", 2)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == STEPS
    assert all(abs(x - y) <= 1e-4 * abs(x) for x, y in zip(a, b)), list(zip(a, b))
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.001
    assert (one["world_size"], one["backend"], len(one["devices"])) == (1, None, 1)
    assert (two["world_size"], two["backend"], len(two["devices"])) == (2, "gloo", 2)
    assert one["config_hash"] == two["config_hash"]  # the same run, made another way
    weights_one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    weights_two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    assert weights_one.keys() == weights_two.keys()  # synchronised batch norm keeps the checkpoint's layout


def test_shards_are_equal_shares_in_rank_order():
    items = torch.arange(12)
    assert [World(r, 3, "gloo").shard(items).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert SINGLE.shard(items) is items


def test_synced_batchnorm_alone_is_batchnorm_and_keeps_its_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 36, 8), torch.nn.BatchNorm1d(8))
    x = torch.randn(6, 1, 8, 8)
    net(x)  # move the running statistics away from their initial values
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expected = net.eval()(x)
    synced = synchronise_batchnorm(net)
    assert isinstance(synced[1], SyncedBatchNorm) and isinstance(synced[4], SyncedBatchNorm)
    assert all(torch.equal(before[k], v) for k, v in synced.state_dict().items())
    assert torch.allclose(synced.eval()(x), expected)


@pytest.mark.parametrize("name, sets, message", [
    ("moco", [], "runs on one process"),
    ("simclr", ["train.batch_size=33"], "train.batch_size=33 does not split into 2"),
    ("protonet", ["method.meta_batch=3"], "method.meta_batch=3 does not split into 2"),
    ("bmssl", ["method.adapt=all"], "adapt=all"),
])
def test_runs_that_cannot_split_are_refused(name, sets, message):
    with pytest.raises(ConfigError, match=message):
        check_world(resolve(name, "synthetic-5w1s", sets=sets), 2)


def test_procs_must_be_positive(runs_dir, capsys):
    assert run_cli("run", "--method", "simclr", "--bench", "synthetic-5w1s", "--procs", "0", "--runs-dir", runs_dir) == 2
    assert "--procs 0" in capsys.readouterr().err
    assert not runs_dir.exists()
