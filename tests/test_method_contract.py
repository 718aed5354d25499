"""The contract every registered method keeps (every entry of ``harness.methods.METHODS``, each with its
tiny settings: the ``tiny:`` block of its preset, ``harness.resolve.tiny_settings``): a tiny run through
the CLI finishes with a record; its checkpoint loads with ``weights_only=True`` and alone gives the run's
test accuracy; a run stopped after a checkpoint resumes to exactly the run made in one go; and a method
that learns without labels never receives them (permuting them changes nothing). A new method is covered
by registering it and giving its preset a ``tiny:`` block."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from harness.checkpoint import read_checkpoint
from harness.methods import METHODS
from harness.protocol import Benchmark
from harness.resolve import resolve, tiny_settings
from harness.runner import RunRequest, build_method, execute, score
from harness.store import CHECKPOINT, TRAIN_LOG, read_record, read_scores

from conftest import interrupt_at_step, only_run, run_cli

BENCH = "synthetic-5w1s"
STEPS = 4  # a checkpoint after step 2; a crash at step 3 (0-based) leaves it to resume from
RUN = [
    f"train.steps={STEPS}",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "bench.episodes=10",
    "train.val_episodes=5",
]


def tiny_sets(name: str) -> list[str]:
    """The method's tiny settings, then the contract's run length and scoring, as ``--set`` items."""
    return [*tiny_settings(name).text(), *RUN]


def trains(name: str) -> bool:
    return METHODS.get(name).load().trains


@pytest.fixture(scope="module", params=METHODS.names())
def tiny_run(request, tmp_path_factory):
    """(method name, run directory, record) of the method's tiny run through ``harness run`` (seed 0)."""
    name = request.param
    runs = tmp_path_factory.mktemp(f"contract-{name}")
    assert (
        run_cli(
            "run",
            "--method",
            name,
            "--bench",
            BENCH,
            *[a for s in tiny_sets(name) for a in ("--set", s)],
            "--runs-dir",
            runs,
            "--no-progress",
        )
        == 0
    )
    run_dir = only_run(runs)
    return name, run_dir, read_record(run_dir)


def state(run_dir):
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["model"]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def log_rows(run_dir) -> list[tuple[str, str]]:
    with open(run_dir / TRAIN_LOG, newline="") as fh:
        return [(row["step"], row["loss"]) for row in csv.DictReader(fh)]


def test_a_tiny_run_through_the_cli(tiny_run):
    name, run_dir, record = tiny_run
    assert record["status"] == "ok" and record["method"] == name and record["episodes"] == 10
    assert record["steps"] == (STEPS if trains(name) else 0) and 0 < record["accuracy"] <= 1
    assert (run_dir / CHECKPOINT).is_file() == trains(name)


def test_the_checkpoint_loads_weights_only_and_alone_gives_the_runs_accuracy(tiny_run):
    """The checkpoint holds tensors and plain containers only; loaded into a method built from another
    seed (and never set up), it scores the run's test episodes exactly as the run did."""
    name, run_dir, record = tiny_run
    if not trains(name):
        pytest.skip(f"{name} does not train: no checkpoint")
    resolved = resolve(name, BENCH, sets=tiny_sets(name))
    method = build_method(resolved, 1, torch.device("cpu"))
    method.load_state_dict(read_checkpoint(run_dir / CHECKPOINT)["model"])
    result = score(method, resolved.config, resolved.benchmark.load(resolved.config, with_train=False))
    assert np.array_equal(result.correct, read_scores(run_dir)[1]) and result.mean == record["accuracy"]


def test_resume_continues_exactly_where_it_stopped(tiny_run, tmp_path, monkeypatch):
    name, straight, record = tiny_run
    if not trains(name):
        pytest.skip(f"{name} does not train: nothing to resume")
    resolved = resolve(name, BENCH, sets=tiny_sets(name))
    restore = interrupt_at_step(monkeypatch, resolved.method_class, STEPS - 1)
    with pytest.raises(KeyboardInterrupt):
        execute(RunRequest(resolved, 0, tmp_path / "resumed", progress=False))
    assert read_record(tmp_path / "resumed")["status"] == "failed"
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 2
    restore()
    resumed = execute(RunRequest(resolved, 0, tmp_path / "resumed", resume=True, progress=False))
    assert resumed["status"] == "ok" and resumed["steps"] == STEPS
    assert same_state(state(straight), state(tmp_path / "resumed"))
    assert log_rows(tmp_path / "resumed") == log_rows(straight) and len(log_rows(straight)) == STEPS
    assert np.array_equal(read_scores(tmp_path / "resumed")[1], read_scores(straight)[1])
    assert resumed["accuracy"] == record["accuracy"]


def test_labels_reach_only_the_methods_that_use_them(tiny_run, tmp_path, monkeypatch):
    """Trained again with the training labels permuted: a label-free method receives none and ends
    identical; a method that uses labels receives them, and learns from them."""
    name, plain, _ = tiny_run
    cls = METHODS.get(name).load()
    if not cls.trains:
        pytest.skip(f"{name} does not train: it sees no training data")
    seen, original_setup, original_load = [], cls.setup, Benchmark.load
    monkeypatch.setattr(cls, "setup", lambda self, data: seen.append(data.labels) or original_setup(self, data))

    def permuted(self, cfg, with_train=True):
        data = original_load(self, cfg, with_train)
        order = torch.randperm(len(data.train.labels), generator=torch.Generator().manual_seed(5))
        data.train.labels = data.train.labels[order]
        return data

    monkeypatch.setattr(Benchmark, "load", permuted)
    execute(RunRequest(resolve(name, BENCH, sets=tiny_sets(name)), 0, tmp_path / "permuted", progress=False))
    same = same_state(state(plain), state(tmp_path / "permuted"))
    if cls.uses_labels:
        assert len(seen) == 1 and isinstance(seen[0], torch.Tensor) and not same
    else:
        assert seen == [None] and same


def test_tiny_settings_are_no_benchmark_family(tmp_path):
    """A benchmark whose family (or name) is ``tiny`` takes no settings from the presets' ``tiny:`` blocks."""
    bench = tmp_path / "tiny.yaml"
    bench.write_text(
        "family: tiny\nsplits: {train: train, val: val, test: test}\nbenchmarks:\n"
        "  tiny: {dataset: synthetic-glyphs, image_size: 28, ways: 5, shots: 1}\n"
    )
    assert tiny_settings("simclr")["train.batch_size"] == 16
    assert resolve("simclr", f"{bench}:tiny").config.train.batch_size == 256  # presets/simclr.yaml [default]
