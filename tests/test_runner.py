"""The shared runner and the result records: completeness, failures, atomicity, eval, results (every
method's exact resume: tests/test_method_contract.py)."""

from __future__ import annotations

import json

import pytest
import torch

from harness import files
from harness.episodes import sample_episodes
from harness.runner import log_interval
from harness.store import read_config, read_record, read_scores

from conftest import only_run, run_cli

RECORD_KEYS = {
    "method",
    "benchmark",
    "seed",
    "config_hash",
    "accuracy",
    "ci95",
    "episodes",
    "episode_digest",
    "head",
    "train_seconds",
    "eval_seconds",
    "peak_memory_mb",
    "device",
    "versions",
    "git",
    "command",
    "status",
    "reason",
}


def test_pixels_run_writes_a_complete_record(runs_dir, capsys):
    assert run_cli("run", "--method", "pixels", "--bench", "synthetic-5w1s", "--runs-dir", runs_dir) == 0
    assert "accuracy" in capsys.readouterr().out
    run_dir = only_run(runs_dir)
    record = read_record(run_dir)
    assert RECORD_KEYS <= set(record) and record["status"] == "ok" and record["reason"] is None
    assert set(record["versions"]) >= {"python", "torch", "lightly", "learn2learn", "harness"}
    assert record["episodes"] == 2000 and record["head"] == "prototype"
    accuracies, correct = read_scores(run_dir)
    assert correct.shape == (2000, 75) and record["accuracy"] == pytest.approx(accuracies.mean())
    test_labels = torch.arange(64).repeat_interleave(20).numpy()
    assert record["episode_digest"] == sample_episodes(test_labels, 5, 1, 15, 2000, 0, "synthetic-glyphs/test").digest
    assert read_config(run_dir)["train"]["steps"] == 0
    assert (run_dir / "episodes.csv").read_text().count("\n") == 2001


def test_diverged_run_is_recorded_as_failed(runs_dir, capsys):
    code = run_cli(
        "run",
        "--method",
        "protonet",
        "--bench",
        "synthetic-5w1s",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.steps=20",
        "--set",
        "train.log_every=5",
        "--runs-dir",
        runs_dir,
        "--no-progress",
    )
    assert code == 1
    assert "training diverged" in capsys.readouterr().err
    record = read_record(only_run(runs_dir))
    assert record["status"] == "failed" and "training diverged at step" in record["reason"]
    assert "accuracy" not in record and not (only_run(runs_dir) / "episodes.csv").exists()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    files.write_json(target, {"status": "ok"})
    with pytest.raises(TypeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("{partial")
            raise TypeError("crash mid-write")
    assert json.loads(target.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("log_every, steps, rows", [(2, 12, 6), (20, 150, 8), (20, 10, 10), (50, 30, 10), (5, 1, 1)])
def test_a_short_run_logs_enough_rows_to_draw_a_curve(log_every, steps, rows):
    interval = log_interval(log_every, steps)
    assert len({s for s in range(1, steps + 1) if s % interval == 0 or s == steps}) == rows


def test_eval_rescores_a_trained_run_elsewhere(runs_dir):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=10",
            "--set",
            "bench.episodes=50",
            "--runs-dir",
            runs_dir,
            "--no-progress",
        )
        == 0
    )
    source = only_run(runs_dir)
    assert (
        run_cli("eval", "--run", source, "--bench", "synthetic-5w5s", "--head", "logreg", "--runs-dir", runs_dir) == 0
    )
    evaluated = [r for r in map(read_record, runs_dir.iterdir()) if r["kind"] == "eval"]
    assert len(evaluated) == 1
    record = evaluated[0]
    assert record["benchmark"] == "synthetic-5w5s" and record["trained_on"] == "synthetic-5w1s"
    assert record["head"] == "logreg" and record["source_run"] == source.name and record["episodes"] == 2000
    assert 0.2 < record["accuracy"] <= 1.0


def test_results_table_lists_runs(runs_dir, capsys):
    run_cli(
        "run", "--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=30", "--runs-dir", runs_dir
    )
    capsys.readouterr()
    assert run_cli("results", "--runs-dir", runs_dir, "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run,method,benchmark,seed,head,status,accuracy")
    assert ",pixels,synthetic-5w1s,0,prototype,ok," in lines[1]
