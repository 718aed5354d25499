"""How long `harness sweep` takes to plan and submit a 20-run sweep (target: at most 5 s).

Run by hand against a SLURM controller (e.g. the local one: bash slurm/local-cluster.sh start;
. /tmp/harness-slurm/env.sh):

    python tests/perf/bench_sweep.py [--repeat 3]

Each repeat submits pixels,protonet × synthetic-5w1s × seeds 0-9 (20 runs, one array) into a fresh
runs directory, timing the whole command as a user sees it (interpreter start, imports, planning,
sbatch), then cancels the array. It also times the same command with --dry-run (planning only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.sweep.plan import Sweep
from harness.sweep.profiles import slurm_answers

GRID = [
    "--methods",
    "pixels,protonet",
    "--benches",
    "synthetic-5w1s",
    "--seeds",
    "0-9",
    "--set",
    "bench.episodes=100",
    "--executor",
    "slurm",
    "--profile",
    "local",
    "--name",
    "bench20",
]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    answers, said = slurm_answers()
    if not answers:
        print(
            f"no SLURM controller answers ({said}); start one with: bash slurm/local-cluster.sh start", file=sys.stderr
        )
        return 2
    harness = [sys.executable, "-m", "harness.cli"]
    plan, submit = [], []
    for _ in range(args.repeat):
        runs_dir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
        try:
            plan.append(timed([*harness, "sweep", *GRID, "--runs-dir", str(runs_dir), "--dry-run"]))
            submit.append(timed([*harness, "sweep", *GRID, "--runs-dir", str(runs_dir)]))
            jobs = Sweep(runs_dir, "bench20").latest_jobs()
            assert len(jobs) == 20, f"expected 20 submitted runs, got {len(jobs)}"
            subprocess.run(["scancel", *sorted({j["job_id"].split("_")[0] for j in jobs.values()})], check=True)
        finally:
            shutil.rmtree(runs_dir, ignore_errors=True)
    print(f"20-run sweep, {args.repeat} repeats (seconds, whole command):")
    print(f"  plan only (--dry-run): median {statistics.median(plan):.2f}, min {min(plan):.2f}, max {max(plan):.2f}")
    print(
        f"  plan + submit:         median {statistics.median(submit):.2f}, min {min(submit):.2f}, "
        f"max {max(submit):.2f}  (target <= 5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
