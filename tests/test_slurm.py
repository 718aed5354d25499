"""Sweeps through a real SLURM controller (CI starts one with slurm/local-cluster.sh): one job array
per sweep, concurrent record writes, skip-finished, failures with their reason, and requeued
tasks that resume from their checkpoint to the same result as an uninterrupted run."""

from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from harness.store import CHECKPOINT, RunStore, read_record, read_scores
from harness.sweep.plan import Sweep
from harness.sweep.profiles import slurm_answers

from conftest import run_cli

pytestmark = pytest.mark.slurm
ANSWERS, SINFO_SAID = slurm_answers()
if not ANSWERS:
    pytest.skip(
        f"no SLURM controller answers ({SINFO_SAID.splitlines()[-1] if SINFO_SAID else 'sinfo failed'}); "
        f"start one with: bash slurm/local-cluster.sh start; . /tmp/harness-slurm/env.sh",
        allow_module_level=True,
    )

ON_SLURM = ("--executor", "slurm", "--profile", "local")


def wait_until(condition, what: str, timeout_s: float = 180, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.is_file() else ""
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{tail}")


def only_job(runs_dir: Path, name: str) -> dict:
    jobs = Sweep(runs_dir, name).latest_jobs()
    assert len(jobs) == 1
    return next(iter(jobs.values()))


@pytest.fixture(scope="module")
def pixel_sweep(tmp_path_factory):
    """Eight cheap runs as one array, all eight allowed at once (the node declares 8 CPUs)."""
    runs_dir = tmp_path_factory.mktemp("slurm-runs")
    args = (
        "sweep",
        "--methods",
        "pixels",
        "--benches",
        "synthetic-5w1s",
        "--seeds",
        "0-7",
        "--set",
        "bench.episodes=100",
        *ON_SLURM,
        "--parallelism",
        "8",
        "--name",
        "pixels8",
        "--runs-dir",
        runs_dir,
    )
    code = run_cli(*args, "--wait")
    return runs_dir, args, code


def test_array_tasks_write_all_records_concurrently(pixel_sweep):
    runs_dir, _, code = pixel_sweep
    assert code == 0
    submissions = Sweep(runs_dir, "pixels8").submissions()
    assert len(submissions) == 1
    job_ids = sorted(submissions[0]["jobs"].values(), key=lambda j: int(j.split("_")[1]))
    array = job_ids[0].split("_")[0]
    assert job_ids == [f"{array}_{i}" for i in range(8)]  # one array, one task per run
    records = list(RunStore(runs_dir))
    assert sorted(r["seed"] for r in records) == list(range(8))
    assert all(r["status"] == "ok" and r["episodes"] == 100 for r in records)
    assert all(read_scores(r["run_dir"])[1].shape == (100, 75) for r in records)
    # they ran at the same time (in practice all eight), each writing its own record
    assert most_at_once([(r["started"], r["finished"]) for r in records]) >= 4


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The largest number of [start, end] intervals (ISO times, 1 s resolution) covering one instant."""
    events = sorted([(start, 0) for start, _ in intervals] + [(end, 1) for _, end in intervals])
    running = most = 0
    for _, is_end in events:
        running += -1 if is_end else 1
        most = max(most, running)
    return most


def test_status_shows_every_run_completed(pixel_sweep, capsys):
    runs_dir, _, _ = pixel_sweep
    capsys.readouterr()
    assert run_cli("status", "pixels8", "--runs-dir", runs_dir) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("pixels synthetic-5w1s seed")]
    assert len(rows) == 8
    array = next(iter(Sweep(runs_dir, "pixels8").latest_jobs().values()))["job_id"].split("_")[0]
    for seed, row in enumerate(sorted(rows)):
        assert f" {array}_{seed} " in row and "COMPLETED" in row and "%" in row
    assert "8 runs: 8 completed" in out


def test_resubmitting_a_finished_sweep_submits_nothing(pixel_sweep, capsys):
    runs_dir, args, _ = pixel_sweep
    capsys.readouterr()
    assert run_cli(*args) == 0
    assert "8 runs; 0 to submit, 8 already done" in capsys.readouterr().out
    assert len(Sweep(runs_dir, "pixels8").submissions()) == 1


def test_a_failing_task_is_reported_with_its_reason(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    args = (
        "sweep",
        "--methods",
        "protonet",
        "--benches",
        "synthetic-5w1s",
        "--set",
        "train.lr=0.001,1e30",
        "--set",
        "train.steps=3",
        "--set",
        "train.log_every=1",
        "--set",
        "method.train_ways=5",
        "--set",
        "bench.episodes=100",
        *ON_SLURM,
        "--name",
        "diverge",
        "--runs-dir",
        runs_dir,
    )
    assert run_cli(*args, "--wait") == 1
    captured = capsys.readouterr()
    assert "1 of 2 runs failed" in captured.err
    by_status = {r["status"]: r for r in list(RunStore(runs_dir))}
    assert set(by_status) == {"ok", "failed"}
    assert "training diverged at step" in by_status["failed"]["reason"]

    assert run_cli("status", "diverge", "--runs-dir", runs_dir) == 0
    out = capsys.readouterr().out
    ok_row = next(line for line in out.splitlines() if line.startswith("protonet synthetic-5w1s train.lr=0.001 "))
    assert "COMPLETED" in ok_row
    failed_row = failed_line(out)
    assert "FAILED" in failed_row and "training diverged" in failed_row
    log = only_failed_log(runs_dir)
    assert f"stderr: {log} (last 10 lines):" in out
    assert "RunFailed: training diverged at step" in log.read_text()

    assert run_cli(*args, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "0 to submit, 1 already done, 1 failed (resubmit with --retry-failed)" in out
    assert re.search(r"\bfailed\s+skip\s+RunFailed: training diverged", failed_line(out))
    assert run_cli(*args, "--dry-run", "--retry-failed") == 0
    out = capsys.readouterr().out
    assert "1 to submit" in out and re.search(r"\bfailed\s+submit\s+RunFailed: training diverged", failed_line(out))
    assert "#SBATCH --partition=debug" in out


def failed_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("protonet synthetic-5w1s train.lr=1e30 "))


def only_failed_log(runs_dir: Path) -> Path:
    sweep = Sweep(runs_dir, "diverge")
    failed = [r for r in sweep.runs() if read_record(r.run_dir)["status"] == "failed"]
    return Path(sweep.latest_jobs()[failed[0].key]["log"])


def test_requeued_task_resumes_from_its_checkpoint_to_the_same_result(tmp_path, capsys):
    """Requeued twice while training: once from outside (`scontrol requeue`, as an admin or a node
    failure would), once by submitit itself on the preemption signal (USR2 → checkpoint() →
    requeue). The result equals an uninterrupted run's, episode by episode."""
    grid = (
        "--methods",
        "protonet",
        "--benches",
        "synthetic-5w1s",
        "--set",
        "train.steps=1000",
        "--set",
        "train.checkpoint_every=50",
        "--set",
        "method.train_ways=5",
        "--set",
        "bench.episodes=200",
        *ON_SLURM,
        "--name",
        "requeue",
    )
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    assert run_cli("sweep", *grid, "--runs-dir", interrupted) == 0
    assert run_cli("sweep", *grid, "--runs-dir", straight) == 0
    job = only_job(interrupted, "requeue")
    run_dir = Path(Sweep(interrupted, "requeue").runs()[0].run_dir)
    stdout = Path(job["log"]).with_suffix(".out")

    wait_until(lambda: (run_dir / CHECKPOINT).is_file(), "the first checkpoint", log=stdout)
    subprocess.run(["scontrol", "requeue", job["job_id"]], check=True)
    wait_until(
        lambda: stdout.is_file() and "from its checkpoint" in stdout.read_text(),
        "the requeued task to resume",
        log=stdout,
    )
    resumed_at = (run_dir / CHECKPOINT).stat().st_mtime
    wait_until(lambda: (run_dir / CHECKPOINT).stat().st_mtime > resumed_at, "a checkpoint after resuming", log=stdout)
    assert read_record(run_dir)["status"] == "running"
    subprocess.run(["scancel", "--signal=USR2", job["job_id"]], check=True)

    capsys.readouterr()
    assert run_cli("sweep", *grid, "--runs-dir", interrupted, "--wait") == 0  # submits nothing, waits
    assert run_cli("sweep", *grid, "--runs-dir", straight, "--wait") == 0
    assert "0 to submit" in capsys.readouterr().out
    log = stdout.read_text()
    assert log.count("from its checkpoint") == 2 and "Calling checkpoint method" in log
    assert "DUE TO JOB REQUEUE" in Path(job["log"]).read_text()

    a, b = read_record(run_dir), list(RunStore(straight))[0]
    assert a["status"] == b["status"] == "ok" and a["steps"] == b["steps"] == 1000
    assert a["accuracy"] == b["accuracy"]
    assert np.array_equal(read_scores(run_dir)[1], read_scores(b["run_dir"])[1])
    assert train_losses(run_dir) == train_losses(Path(b["run_dir"]))


def train_losses(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "train_log.csv", newline="") as fh:
        return [(row["step"], row["loss"]) for row in csv.DictReader(fh)]


def test_a_two_process_run_and_its_requeue(tmp_path, capsys):
    """A profile with tasks_per_node: 2 makes each run a 2-process job (one run, both tasks); requeued
    while training, both processes resume from process 0's checkpoint, and the result equals an
    uninterrupted 2-process run's."""
    profile = tmp_path / "two-tasks.yaml"
    profile.write_text("partition: debug\ncpus_per_task: 1\ntasks_per_node: 2\ntime_min: 30\nsignal_delay_s: 30\n")
    grid = (
        "--methods",
        "simclr",
        "--benches",
        "synthetic-5w1s",
        "--set",
        "train.steps=250",
        "--set",
        "train.checkpoint_every=20",
        "--set",
        "train.batch_size=16",
        "--set",
        "method.projection_hidden=32",
        "--set",
        "method.projection_dim=16",
        "--set",
        "bench.episodes=100",
        "--executor",
        "slurm",
        "--profile",
        str(profile),
        "--name",
        "twoproc",
    )
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    assert run_cli("sweep", *grid, "--runs-dir", interrupted) == 0
    assert run_cli("sweep", *grid, "--runs-dir", straight) == 0
    job = only_job(interrupted, "twoproc")
    run_dir = Path(Sweep(interrupted, "twoproc").runs()[0].run_dir)
    stdout = Path(job["log"]).with_suffix(".out")

    wait_until(lambda: (run_dir / CHECKPOINT).is_file(), "the first checkpoint", log=stdout)
    subprocess.run(["scontrol", "requeue", job["job_id"]], check=True)
    capsys.readouterr()
    assert run_cli("sweep", *grid, "--runs-dir", interrupted, "--wait") == 0
    assert run_cli("sweep", *grid, "--runs-dir", straight, "--wait") == 0
    logs = "".join(p.read_text() for p in Path(job["log"]).parent.glob(f"{job['job_id']}*.out"))
    assert "from its checkpoint (process 0 of 2)" in logs and "from its checkpoint (process 1 of 2)" in logs

    a, b = read_record(run_dir), list(RunStore(straight))[0]
    assert a["status"] == b["status"] == "ok" and a["world_size"] == b["world_size"] == 2 and a["backend"] == "gloo"
    assert a["accuracy"] == b["accuracy"]
    assert np.array_equal(read_scores(run_dir)[1], read_scores(b["run_dir"])[1])
    assert train_losses(run_dir) == train_losses(Path(b["run_dir"]))


def test_tune_runs_its_trials_as_one_job_array(tmp_path, capsys):
    """``harness tune --executor slurm``: every trial a task of one array, scored on validation only."""
    import json

    space = tmp_path / "space.yaml"
    space.write_text("method.train_ways: [5, 10]\ntrain.lr: [0.001]\n", encoding="utf-8")
    runs_dir = tmp_path / "runs"
    code = run_cli(
        "tune",
        "--method",
        "protonet",
        "--bench",
        "synthetic-5w1s",
        "--space",
        space,
        "--trials",
        "2",
        "--budget-minutes",
        "0",
        "--set",
        "train.steps=4",
        "--set",
        "train.val_episodes=20",
        *ON_SLURM,
        "--runs-dir",
        runs_dir,
    )
    assert code == 0
    store = runs_dir / "tuning" / "protonet-synthetic-5w1s"
    submissions = Sweep(store, "tune-protonet-synthetic-5w1s").submissions()
    assert len(submissions) == 1 and submissions[0]["executor"] == "slurm"
    assert len({job.split("_")[0] for job in submissions[0]["jobs"].values()}) == 1  # one array, two tasks
    records = list(RunStore(store))
    assert len(records) == 2 and all(r["status"] == "ok" and r.get("accuracy") is None for r in records)
    chosen = json.loads(capsys.readouterr().out.splitlines()[-1])["chosen"]
    assert chosen["method.train_ways"] in (5, 10)
