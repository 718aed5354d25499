"""The side of a sweep that runs inside a job: ``SweepTask`` (what submitit pickles) and
``execute_run``. Tasks write only inside their own run directories (atomically, through the runner),
so no file is shared between the tasks of an array."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

from harness import kernels
from harness.errors import HarnessError, RunFailed, Terminated
from harness.sweep.plan import Run


def task_env() -> dict[str, str]:
    """What a task needs from the submitting shell (sbatch may be configured not to export it)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("HARNESS_")}
    if os.environ.get("SLURM_CONF"):
        keep["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return keep


class SweepTask:
    """What one submitit job runs: its planned runs, one after the other, each with
    ``execute(resume=True)`` in its fixed run directory.

    Checkpointable: on a time limit or preemption SLURM sends USR2, submitit calls ``checkpoint()``
    and requeues the job; the restarted task resumes each unfinished run from the runner's last
    checkpoint (a finished one is returned as is). A requeue from outside (``scontrol requeue``)
    restarts the same pickled task with the same effect. A run that raises is recorded failed by
    the runner; the task goes on with its other runs, then raises, so the job ends FAILED.
    """

    def __init__(self, runs: list[Run], device: str, env: dict[str, str], threads: int | None, local: bool = False):
        self.runs, self.device, self.env, self.threads, self.local = runs, device, env, threads, local

    def __call__(self) -> list[dict]:
        for key, value in self.env.items():
            if key.startswith("HARNESS_") or key not in os.environ:
                os.environ[key] = value
        if self.local:  # a local worker stopped by its sweep records its run interrupted (submitit ignores SIGTERM)
            signal.signal(signal.SIGTERM, raise_terminated)
        kernels.pin(run_pins(self.runs[0]))  # before torch starts (submit groups runs of equal pins)
        from harness.distributed import leave, slurm_world

        records, failures = [], []
        world = slurm_world(self.device)  # a job of several tasks: one run split over them
        try:
            for run in self.runs:
                try:
                    records.append(execute_run(run, self.device, world, run.threads or self.threads))
                except Exception as exc:
                    traceback.print_exc()
                    written = getattr(exc, "written_files", [])
                    failures.append(
                        f"{run.label}: {type(exc).__name__}: {exc}" + (f" (record: {written[-1]})" if written else "")
                    )
                    print(f"harness: run failed: {failures[-1]}", file=sys.stderr, flush=True)
                    if world.size > 1:
                        break  # the other processes of this run cannot go on without this one
        finally:
            leave()
        if failures:
            raise RunFailed(f"{len(failures)} of {len(self.runs)} runs failed:\n  " + "\n  ".join(failures))
        return records

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def raise_terminated(signum, frame):
    raise Terminated


def run_pins(run: Run) -> kernels.Pins:
    """The kernel pins ``run`` trains under: a replayed record's, else its configuration's level (known
    without importing torch, so a task pins them before torch starts)."""
    return run.kernels or kernels.level_pins(run.level)


def execute_run(run: Run, device: str, world=None, threads: int | None = None) -> dict:
    """Run (or resume) one planned run with ``threads`` CPU threads (None: ``runner.set_threads``' rule);
    refuses when its configuration no longer resolves to the planned hash (the harness or a preset changed
    since planning)."""
    from harness.benchmarks import reference
    from harness.distributed import SINGLE
    from harness.resolve import check_data, resolve
    from harness.settings import config_hash
    from harness.store import claimed

    world = world or SINGLE

    resolved = resolve(run.method, reference(run.benchmark, run.bench_file), overrides=run.overrides)
    digest = config_hash(resolved.config)
    if digest != run.config_hash:
        raise HarnessError(
            f"{run.label} now resolves to config hash {digest}, not {run.config_hash} "
            f"as planned: the harness or its presets changed since; plan the sweep again"
        )
    check_data(resolved)
    kernels.pin(run_pins(run))  # an error, naming both, where this process's torch runs other kernels
    run_dir = Path(run.run_dir)
    if world.size > 1:  # its processes meet in collectives: no claim to wait on between them
        return run_planned(resolved, run, run_dir, device, world, threads)
    with claimed(run_dir.parent, run.config_hash, run.seed) as done:  # one computation per runs directory
        if done and Path(done["run_dir"]) != run_dir:
            print(f"{run.label}: made meanwhile by another sweep in {done['run_dir']}", flush=True)
            return done
        return run_planned(resolved, run, run_dir, device, world, threads)


def run_planned(resolved, run: Run, run_dir: Path, device: str, world, threads: int | None) -> dict:
    from harness.runner import RunRequest, execute
    from harness.store import CHECKPOINT, summary_line

    resuming = (run_dir / CHECKPOINT).is_file()
    print(
        f"{'resuming' if resuming else 'starting'} {run.label} in {run_dir}"
        f"{' from its checkpoint' if resuming else ''}"
        f"{f' (process {world.rank} of {world.size})' if world.size > 1 else ''}",
        flush=True,
    )
    record = execute(
        RunRequest(
            resolved, run.seed, run_dir, device, resume=True, progress=world.is_main, world=world, threads=threads
        )
    )
    if world.is_main:
        print(summary_line(record), flush=True)
    return record
