"""Issue 25's dead runs: SIGTERM (what SLURM and most schedulers send) to `harness run` records the run
as failed with reason "terminated (SIGTERM)" and prints the resume command (exit 143), as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from harness.store import read_record

RUN = ["--method", "protonet", "--bench", "synthetic-5w1s", "--set", "train.steps=100000",
       "--set", "train.checkpoint_every=5", "--set", "bench.episodes=10", "--no-progress"]


def test_sigterm_records_the_run_terminated_with_its_resume_command(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *RUN, "--run-dir", str(run_dir)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated (SIGTERM)" in err and f"--run-dir {run_dir} --resume" in err
    record = read_record(run_dir)
    assert (record["status"], record["reason"]) == ("failed", "terminated (SIGTERM)")
    assert os.path.isfile(run_dir / "error.log")
