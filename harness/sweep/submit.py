"""Submitting: plan runs into a sweep and submit those not done, as one submitit SLURM job array (one
task per run, throttled by the profile's parallelism) or as local worker processes sharing the runs;
``--dry-run`` (what would be submitted, with the sbatch settings) and ``--wait``."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import time
from collections import Counter
from contextlib import contextmanager, redirect_stderr, suppress
from dataclasses import dataclass

from harness.errors import HarnessError, RunFailed
from harness.provenance import now
from harness.sweep.plan import Run, Sweep, assign_run_dirs, new_run_dir
from harness.sweep.profiles import slurm_parameters
from harness.sweep.status import RunStatus, assess, print_status, print_warnings
from harness.sweep.task import SweepTask, run_pins, task_env

LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # local workers have no time limit worth the name


def local_cores() -> int:
    """The CPU cores local workers share (their threads are split evenly among them)."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Launch:
    """Where and how runs are submitted."""

    executor: str
    profile: dict
    profile_source: str
    parallelism: int
    device: str


def submit(sweep: Sweep, runs: list[Run], executor: str, profile: dict, parallelism: int, device: str) -> dict:
    """Submit ``runs`` (SLURM: one array, one task per run, at most ``parallelism`` at once; local:
    ``parallelism`` worker processes sharing the runs) and record the submission."""
    import submitit
    from submitit.core.utils import FailedSubmissionError, UncompletedJobError

    submitted = now()
    if executor == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=sweep.logs_folder, max_num_timeout=profile["max_timeouts"])
            ex.update_parameters(**{**slurm_parameters(profile, sweep.name), "array_parallelism": parallelism})
        except RuntimeError as exc:
            raise HarnessError(f"cannot submit to SLURM: {exc}") from None
        tasks = [SweepTask([run], device, task_env(), None) for run in runs]
        groups = [[run] for run in runs]
    else:
        ex = submitit.LocalExecutor(folder=sweep.logs_folder)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        lanes = min(parallelism, len(runs))
        by_pins: dict[str, list[Run]] = {}  # a worker process trains under one set of kernel pins
        for run in runs:
            by_pins.setdefault(json.dumps(run_pins(run), sort_keys=True), []).append(run)
        groups = [g for same in by_pins.values() for g in (same[i::lanes] for i in range(min(lanes, len(same))))]
        threads = max(1, local_cores() // lanes)
        tasks = [SweepTask(group, device, task_env(), threads, local=True) for group in groups]
    try:
        # local workers ignore SIGINT (inherited): Ctrl-C reaches only this process, which stops them cleanly
        with redirect_stderr(io.StringIO()), sigint_ignored(executor == "local"):
            jobs = ex.submit_array(tasks)
    except (UncompletedJobError, FailedSubmissionError, OSError) as exc:
        raise HarnessError(f"submitting to {executor} failed: {str(exc).strip()}") from None
    submission = {
        "executor": executor,
        "submitted": submitted,
        "host": socket.gethostname(),
        "logs_folder": str(sweep.logs_folder),
        "parameters": ex.parameters,
        "jobs": {run.key: job.job_id for job, group in zip(jobs, groups) for run in group},
    }
    sweep.save_submission(submission)
    return submission


@contextmanager
def sigint_ignored(active: bool):
    """SIGINT ignored while the block starts processes (which keep ignoring it), then as it was."""
    if not active:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Stopped(Exception):
    """The waiting sweep was sent SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_workers_on_signal(sweep: Sweep, executor: str):
    """While a sweep waits for its local workers, SIGINT or SIGTERM to it stops them: each records its run
    interrupted (resumable from its last checkpoint) and exits; then Stopped is raised. On SLURM the jobs are
    the scheduler's: they go on (scancel stops them)."""

    def stop(signum, frame):
        raise Stopped(signum)

    if executor != "local":
        yield
        return
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except Stopped:
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C does not cut the stopping short
        workers = {
            int(job) for sub in sweep.submissions() for job in sub["jobs"].values() if sub["executor"] == "local"
        }
        for pid in workers:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)  # submitit's controller forwards it to its task
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.2)
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(ChildProcessError):  # reap a worker this process started
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def sbatch_lines(profile: dict, sweep: Sweep, count: int, parallelism: int) -> list[str]:
    """The #SBATCH lines submitit would write for an array of ``count`` tasks (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = {**slurm_parameters(profile, sweep.name), "array_parallelism": parallelism}
    text = _make_sbatch_string(command="", folder=sweep.logs_folder, map_count=count if count > 1 else None, **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")] + [
        f"(setup) {line}" for line in profile.get("setup", [])
    ]


def triage(sweep: Sweep, grid_runs: list[Run], args) -> tuple[list[Run], list[RunStatus], list[RunStatus], list[str]]:
    """Fix the runs' directories and assess them: (the merged plan, each run's status, the runs to
    submit, warnings)."""
    plan = assign_run_dirs(sweep, grid_runs, sweep.finished())
    statuses, warnings = assess(sweep, grid_runs)
    return plan, statuses, select(statuses, args), warnings


def select(statuses: list[RunStatus], args) -> list[RunStatus]:
    """The runs to submit: new ones, failed ones with --retry-failed, finished ones with --force."""
    wanted = {"new"} | ({"failed"} if args.retry_failed else set()) | ({"done"} if args.force else set())
    return [s for s in statuses if s.category in wanted]


def describe_selection(statuses: list[RunStatus], to_submit: list[RunStatus], args) -> str:
    counts = Counter(s.category for s in statuses)
    parts = [f"{len(to_submit)} to submit"]
    if counts["done"]:
        parts.append(f"{counts['done']} already done" + (" (rerun: --force)" if args.force else ""))
    if counts["active"]:
        parts.append(f"{counts['active']} pending or running")
    if counts["failed"]:
        parts.append(
            f"{counts['failed']} failed"
            + (" (resubmitted: --retry-failed)" if args.retry_failed else " (resubmit with --retry-failed)")
        )
    return ", ".join(parts)


def launch_runs(sweep: Sweep, grid_runs: list[Run], grid: dict, launch: Launch, args) -> None:
    """Plan ``grid_runs`` into ``sweep`` and submit those not done (see ``select``); prints what it did."""
    with sweep.locked():
        plan, statuses, to_submit, warnings = triage(sweep, grid_runs, args)
        for status in to_submit:
            if status.category == "done":  # --force: a fresh directory, the finished one stays as it is
                status.run.run_dir = new_run_dir(sweep, status.run)
        sweep.save_plan(plan, grid)
        submission = (
            submit(
                sweep, [s.run for s in to_submit], launch.executor, launch.profile, launch.parallelism, launch.device
            )
            if to_submit
            else None
        )
    print_warnings(warnings)
    print(f"sweep {sweep.name}: {len(grid_runs)} runs; {describe_selection(statuses, to_submit, args)}")
    if submission:
        job_ids = sorted({j.split("_")[0] for j in submission["jobs"].values()})
        where = (
            f"SLURM array {job_ids[0]}, at most {launch.parallelism} at once ({launch.profile_source})"
            if launch.executor == "slurm"
            else f"{len(job_ids)} local worker process(es) (pid {', '.join(job_ids)})"
        )
        print(f"submitted {len(to_submit)} runs as {where}")
    print(
        f"  plan: {sweep.plan_path}\n  logs: {sweep.logs_folder.parent}\n"
        f"  follow: harness status {sweep.name} --runs-dir {sweep.runs_dir}"
    )


def dry_run(sweep: Sweep, grid_runs: list[Run], launch: Launch, args) -> int:
    """Print what ``launch_runs`` would submit, and how; write nothing."""
    from tabulate import tabulate

    _, statuses, to_submit, warnings = triage(sweep, grid_runs, args)
    chosen = {id(s) for s in to_submit}
    print_warnings(warnings)
    print(f"sweep {sweep.name} (dry run): {len(grid_runs)} runs; {describe_selection(statuses, to_submit, args)}")
    rows = [
        [
            s.run.label,
            s.run.config_hash,
            s.category + (f" ({s.state} {s.job_id})" if s.category == "active" else ""),
            "submit" if id(s) in chosen else "skip",
            s.record["run_dir"] if s.category == "done" else s.reason,
        ]
        for s in statuses
    ]
    print(tabulate(rows, headers=["run", "config", "state", "action", "record / reason"], tablefmt="simple"))
    count = len(chosen)
    if launch.executor == "slurm":
        print(
            f"executor slurm, profile {launch.profile_source}: one array of {count} task(s), "
            f"at most {launch.parallelism} at once"
        )
        print("\n".join(sbatch_lines(launch.profile, sweep, max(count, 1), launch.parallelism)))
    else:
        print(f"executor local: {min(launch.parallelism, max(count, 1))} worker process(es) on this machine")
    print("dry run: nothing submitted, nothing written")
    return 0


def follow(sweep: Sweep, runs: list[Run]) -> list[RunStatus]:
    """Poll until no run of ``runs`` is pending or running, printing the counts as they change; the runs'
    statuses then."""
    started, last = time.monotonic(), None
    while True:
        statuses, _ = assess(sweep, runs)
        counts = Counter(s.category for s in statuses)
        line = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last = line
        if not counts["active"]:
            return statuses
        time.sleep(min(30.0, 2.0 + (time.monotonic() - started) / 10))


def wait(sweep: Sweep, runs: list[Run], runs_dir) -> int:
    """``follow`` the runs, then print their status; RunFailed (exit 1) if any failed."""
    statuses = follow(sweep, runs)
    print_status(sweep, statuses, [], lines=10)
    failed = sum(s.category == "failed" for s in statuses)
    if failed:
        raise RunFailed(
            f"{failed} of {len(runs)} runs failed; see above or `harness status {sweep.name} --runs-dir {runs_dir}`"
        )
    return 0
