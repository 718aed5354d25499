"""TensorBoard event files of real runs, read back with TensorBoard's own reader: the curves of
``train_log.csv``, the final scores, a resumed run without duplicate steps, never in the evidence."""

from __future__ import annotations

import csv

import pytest

from harness.loggers.tensorboard import TB_DIR
from harness.resolve import resolve
from harness.runner import RunRequest, execute
from harness.store import TRAIN_LOG, copy_evidence, read_record

from conftest import interrupt_at_step, only_run, run_cli

TINY = ["bench.episodes=20", "train.log_every=1", "train.val_episodes=5"]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the run's tb/ folder as TensorBoard shows it: (step, value) pairs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / TB_DIR))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def csv_rows(run_dir) -> list[dict]:
    with open(run_dir / TRAIN_LOG, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_run_writes_its_curves_and_scores_for_tensorboard(runs_dir, tmp_path):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=3",
            *(a for s in TINY for a in ("--set", s)),
            "--runs-dir",
            runs_dir,
            "--no-progress",
        )
        == 0
    )
    run_dir = only_run(runs_dir)
    series, record = scalars(run_dir), read_record(run_dir)
    assert set(series) == {
        "train/loss",
        "train/accuracy",
        "train/lr",
        "train/steps_per_second",
        "val/final_accuracy",
        "test/accuracy",
        "test/ci95",
    }
    for tag in ("train/loss", "train/accuracy", "train/lr", "train/steps_per_second"):
        assert [step for step, _ in series[tag]] == [1, 2, 3], tag
    rows = csv_rows(run_dir)
    assert [v for _, v in series["train/loss"]] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    assert series["test/accuracy"] == [(3, pytest.approx(record["accuracy"], rel=1e-6))]
    assert series["test/ci95"] == [(3, pytest.approx(record["ci95"], rel=1e-6))]
    assert not (copy_evidence(record, tmp_path / "evidence") / TB_DIR).exists()


def test_a_method_without_training_still_appears_with_its_score(runs_dir):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=20",
            "--runs-dir",
            runs_dir,
            "--no-progress",
        )
        == 0
    )
    run_dir = only_run(runs_dir)
    assert scalars(run_dir) == {
        "test/accuracy": [(0, pytest.approx(read_record(run_dir)["accuracy"], rel=1e-6))],
        "test/ci95": [(0, pytest.approx(read_record(run_dir)["ci95"], rel=1e-6))],
    }


def test_a_resumed_run_continues_its_curves_without_duplicate_steps(tmp_path, monkeypatch):
    """Crash after step 3 with a checkpoint at step 2: TensorBoard must show steps 1-5 once each,
    with the resumed run's values from step 3 on (those of train_log.csv)."""
    resolved = resolve(
        "protonet", "synthetic-5w1s", sets=[*TINY, "train.steps=5", "train.checkpoint_every=2", "train.val_every=2"]
    )
    restore = interrupt_at_step(monkeypatch, resolved.method_class, 3)  # the 4th step
    with pytest.raises(KeyboardInterrupt):
        execute(RunRequest(resolved, seed=0, run_dir=tmp_path / "run", progress=False))
    assert [s for s, _ in scalars(tmp_path / "run")["train/loss"]] == [1, 2, 3]
    restore()
    execute(RunRequest(resolved, seed=0, run_dir=tmp_path / "run", resume=True, progress=False))
    series = scalars(tmp_path / "run")
    for tag in ("train/loss", "train/lr", "train/steps_per_second"):
        assert [step for step, _ in series[tag]] == [1, 2, 3, 4, 5], tag
    assert [step for step, _ in series["val/accuracy"]] == [2, 4]
    rows = csv_rows(tmp_path / "run")
    assert [v for _, v in series["train/loss"]] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    assert series["test/accuracy"] == [(5, pytest.approx(read_record(tmp_path / "run")["accuracy"], rel=1e-6))]
