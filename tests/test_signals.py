"""Dead runs: SIGTERM (what SLURM and most schedulers send) to `harness run` records the run
as failed with reason "terminated (SIGTERM)" and prints the resume command (exit 143), as Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.store import read_record

RUN = [
    "--method",
    "protonet",
    "--bench",
    "synthetic-5w1s",
    "--set",
    "train.steps=100000",
    "--set",
    "train.checkpoint_every=5",
    "--set",
    "bench.episodes=10",
    "--no-progress",
]


def test_sigterm_records_the_run_terminated_with_its_resume_command(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", *RUN, "--run-dir", str(run_dir)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoint.pt").is_file() and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # never leave a 100,000-step run behind
    assert process.returncode == 143, err
    assert "terminated (SIGTERM)" in err and f"--run-dir {run_dir} --resume" in err
    record = read_record(run_dir)
    assert (record["status"], record["reason"]) == ("failed", "terminated (SIGTERM)")
    assert os.path.isfile(run_dir / "error.log")


def test_a_killed_process_of_a_two_process_run_is_recorded_failed(tmp_path):
    run_dir = tmp_path / "two"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            *RUN,
            "--set",
            "train.batch_size=2",
            "--procs",
            "2",
            "--device",
            "cpu",
            "--run-dir",
            str(run_dir),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while not (run_dir / "checkpoint.pt").is_file() and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(c) for c in children if "spawn_main" in open(f"/proc/{c}/cmdline").read().replace("\0", " ")]
        assert len(workers) == 2, children
        os.kill(max(workers), signal.SIGKILL)  # the later-spawned process: rank 1
        _, err = process.communicate(timeout=120)
    finally:
        subprocess.run(["pkill", "-9", "-P", str(process.pid)])
        process.kill()
    assert process.returncode != 0 and f"--run-dir {run_dir} --resume" in err, err
    record = read_record(run_dir)
    assert record["status"] == "failed" and "died" in record["reason"], record


def test_a_full_disk_is_named_as_such(tmp_path, capsys):
    """Where a small filesystem can be mounted (root): a run that fills it fails with "No space left on
    device", not torch's writer error, and its record says so (written over its own blocks, since no
    temporary file fits), rather than staying "running"."""
    from conftest import run_cli

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True).returncode:
        import pytest

        pytest.skip("mounting a small tmpfs needs root")
    try:
        code = run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=2",
            "--set",
            "train.checkpoint_every=1",
            "--set",
            "bench.episodes=5",
            "--run-dir",
            disk / "run",
            "--no-progress",
        )
        err = capsys.readouterr().err
        assert code != 0 and "No space left on device" in err and "inline_container" not in err, err
        record = json.loads((disk / "run" / "result.json").read_text(encoding="utf-8"))
        assert record["status"] == "failed" and "No space left on device" in record["reason"], record
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_a_waiting_local_sweep_stops_its_workers_and_records_them_interrupted(tmp_path, sig):
    """The signal goes to the `harness sweep --wait` process alone (not its group): its local workers stop
    within seconds, their runs are recorded interrupted and the resume command is printed, with no traceback."""
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "sweep",
            "--methods",
            "protonet",
            "--benches",
            "synthetic-5w1s",
            "--seeds",
            "0-1",
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=5",
            "--set",
            "bench.episodes=10",
            "--executor",
            "local",
            "--parallelism",
            "2",
            "--runs-dir",
            str(runs),
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        started = lambda: len(list(runs.glob("2*/checkpoint.pt"))) == 2  # noqa: E731
        while not started() and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert started(), process.communicate(timeout=5)
        workers = {
            int(j) for p in runs.glob("sweeps/*/submissions/*.json") for j in json.loads(p.read_text())["jobs"].values()
        }
        process.send_signal(sig)
        out, err = process.communicate(timeout=150)
    finally:
        process.kill()
    assert process.returncode == 128 + sig, err
    assert "Traceback" not in err and "--retry-failed" in err and "recorded interrupted" in err
    for run_dir in runs.glob("2*"):
        record = read_record(run_dir)
        assert record["status"] == "failed" and record["reason"] in ("terminated (SIGTERM)", "interrupted"), record
    time.sleep(1)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
