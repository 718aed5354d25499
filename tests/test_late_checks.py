"""Issue 25's missing or late checks: each is one clear error before anything is made."""

from __future__ import annotations

import os

from harness.sweep.plan import Sweep

from conftest import one_error, run_cli
from test_evidence import tiny_spec


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


def test_reproduce_with_negative_parallelism_claims_nothing(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tables")
    assert run_cli("reproduce", spec, "--parallelism", "-1", "--runs-dir", tmp_path / "again") == 2
    assert "--parallelism must be a positive integer" in one_error(capsys) and not (tmp_path / "again").exists()


def test_a_truncated_plan_is_one_error_naming_it(tmp_path, capsys):
    sweep = Sweep(tmp_path / "runs", "s")
    sweep.plan_path.parent.mkdir(parents=True)
    sweep.plan_path.write_text('{"runs": [{"key": ')
    for command in (
        ["status", "s"],
        ["status"],
        ["sweep", "--methods", "pixels", "--benches", "synthetic-5w1s", "--name", "s", "--dry-run"],
    ):
        assert run_cli(*command, "--runs-dir", tmp_path / "runs") == 2, command
        assert str(sweep.plan_path) in one_error(capsys)


def test_leaderboard_out_onto_a_folder_is_refused(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=5",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 0
    )
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert run_cli("leaderboard", "--runs-dir", tmp_path / "runs", "--out", tmp_path / "out") == 2
    assert "is a folder" in one_error(capsys) and list((tmp_path / "out").iterdir()) == []


def test_eval_of_a_run_whose_config_is_not_a_mapping(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=1",
            "--set",
            "bench.episodes=5",
            "--run-dir",
            tmp_path / "run",
            "--no-progress",
        )
        == 0
    )
    (tmp_path / "run" / "config.yaml").write_text("- a\n- list\n")
    capsys.readouterr()
    assert run_cli("eval", "--run", tmp_path / "run", "--bench", "synthetic-5w5s", "--runs-dir", tmp_path / "ev") == 2
    assert "not the mapping of setting groups" in one_error(capsys)


def test_a_huge_text_setting_is_refused_before_a_run_exists(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "data.holdout=" + "x" * 100_000,
            "--runs-dir",
            tmp_path / "runs",
        )
        == 2
    )
    assert "100,000 characters long" in one_error(capsys) and not (tmp_path / "runs").exists()


def test_two_sweeps_over_one_grid_make_each_computation_once(tmp_path):
    """Issue 25 item 11: the one-writer rule holds across sweeps, in the run store (a claim per config hash
    and seed): two sweeps of different names submitted together make the run once, and both finish."""
    import subprocess
    import sys

    from harness.store import RunStore

    grid = [
        "--methods",
        "protonet",
        "--benches",
        "synthetic-5w1s",
        "--seeds",
        "0",
        "--set",
        "train.steps=40",
        "--set",
        "bench.episodes=10",
        "--executor",
        "local",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--wait",
    ]
    sweeps = [
        subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "sweep", *grid, "--name", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs
    ok = [r for r in RunStore(tmp_path / "runs") if r["status"] == "ok"]
    assert len(ok) == 1, [r["run_dir"] for r in ok]
    logs = " ".join(p.read_text() for p in (tmp_path / "runs" / "sweeps").glob("*/logs/*/*_log.out"))
    assert "made meanwhile by another sweep" in logs  # both submitted it; the second waited on the claim
