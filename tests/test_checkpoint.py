"""Checkpoints (harness/checkpoint.py): every training method's checkpoint loads as plain tensors, a checkpoint
that would run code is refused by eval and resume, and a missing or truncated one is one error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.resolve import resolve

from conftest import PROTONET, mark_unfinished, one_line_error, run_cli, snapshot


class Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


TRAINING_METHODS = [
    "protonet",
    "maml",
    "maml-fo",
    "anil",
    "simclr",
    "byol",
    "bmssl",
    "bmssl-noboot",
    "bmssl-noinner",
    "bmssl-fo",
    "moco",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "swav",
    "dino",
    "supervised",
    "umtra",
    "cactus-protonet",
    "cactus-maml",
    "psco",
]


TINY = {
    "protonet": ["method.train_ways=5", "method.train_queries=2"],
    "bmssl": ["method.ways=4"],
    "cactus": [
        "train.steps=2",
        "method.encoder_steps=1",
        "method.partitions=2",
        "method.clusters=30",
        "method.encoder_batch_size=8",
    ],
}


def test_every_training_method_is_listed_here():
    from harness.methods import METHODS

    assert sorted(TRAINING_METHODS) == sorted(e.name for e in METHODS if e.load().trains)


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_every_methods_checkpoint_loads_as_plain_tensors(method, tmp_path):
    from harness.checkpoint import read_checkpoint
    from harness.runner import RunRequest, execute

    resolved = resolve(
        method,
        "synthetic-5w1s",
        sets=[
            "train.steps=1",
            "train.batch_size=2",
            "train.val_episodes=1",
            "eval.test=false",
            *TINY.get(method.split("-")[0], []),
        ],
    )
    execute(RunRequest(resolved, 0, tmp_path, progress=False))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (
        state["step"] == resolved.config.train.steps
        and state["optimizers"]
        and read_checkpoint(tmp_path / "checkpoint.pt")["done"] is True
    )


def test_a_checkpoint_that_runs_code_is_refused_by_eval_and_resume(run_copy, runs_dir, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    torch.save({"step": 2, "model": Payload(marker)}, run_copy / "checkpoint.pt")
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w5s", "--runs-dir", runs_dir) == 2
    one_line_error(capsys, "refusing to load", "checkpoint.pt", "could run code")
    assert not marker.exists() and not runs_dir.exists()

    mark_unfinished(run_copy)
    before = snapshot(run_copy)
    assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 2
    one_line_error(capsys, "refusing to load", "delete it to restart the run from step 0")
    assert not marker.exists() and snapshot(run_copy) == before


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_eval_of_a_missing_or_truncated_checkpoint_is_one_error(damage, run_copy, runs_dir, capsys):
    checkpoint = run_copy / "checkpoint.pt"
    if damage == "missing":
        checkpoint.unlink()
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w1s", "--runs-dir", runs_dir) == 2
    one_line_error(capsys, "checkpoint.pt", "is missing" if damage == "missing" else "truncated or corrupt")
    assert not runs_dir.exists()
