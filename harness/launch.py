"""Sweeps: grids of methods × benchmarks × settings × seeds, launched with submitit as one SLURM job
array (or as background worker processes on this machine), with requeue/resume, skip-finished and
``harness status``.

A sweep lives in ``<runs>/sweeps/<name>/``:

- ``plan.json``: every run of the sweep (method, benchmark, seed, overrides, config hash) and its
  run directory, fixed when the run is first planned so that a requeued task resumes the same
  directory. Written atomically, only by ``harness sweep`` (under ``.lock``).
- ``submissions/NNNN-<job>.json``: one file per submission: executor, sbatch settings, and the job
  id of each submitted run.
- ``logs/<job id>/``: submitit's pickles and each task's stdout/stderr.

Array tasks write only inside their own run directory (atomically, through the runner), so no file
is shared between tasks. On every ``harness sweep`` each run of the grid is one of:

- done: an ``ok`` record with the same config hash and seed exists anywhere in the runs directory;
  skipped (``--force`` reruns it into a new run directory);
- active: its latest job is pending or running; never submitted twice;
- failed: its record says failed, or its job ended without a result (cancelled, node failure,
  out of memory); resubmitted with ``--retry-failed``, resuming from its last checkpoint;
- new: never submitted; submitted.

This module is imported by ``harness --help``: heavy modules (torch, submitit, the runner) are
imported inside the functions that use them.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness import files
from harness.errors import ConfigError, HarnessError, RunFailed
from harness.config import parse_seeds
from harness.overrides import Grid, Overrides

EXECUTORS = ("slurm", "local")
SWEEP_FILE_KEYS = ("name", "methods", "benches", "seeds", "set", "config", "executor", "profile", "parallelism")
# SLURM states in which a job may still produce its result.
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
})
# Profile keys: type, and the submitit SlurmExecutor parameter each sets (None: used otherwise).
PROFILE_KEYS = {
    "description": (str, None),
    "partition": (str, "partition"),
    "time_min": (int, "time"),
    "cpus_per_task": (int, "cpus_per_task"),
    "mem_gb": (float, "mem"),
    "gpus_per_node": (int, "gpus_per_node"),
    "constraint": (str, "constraint"),
    "account": (str, "account"),
    "qos": (str, "qos"),
    "parallelism": (int, "array_parallelism"),
    "signal_delay_s": (int, "signal_delay_s"),
    "max_timeouts": (int, None),
    "setup": (list, "setup"),
    "sbatch": (dict, "additional_parameters"),
}
# Used where neither the profile nor the command line says otherwise (submitit's own time default
# of 5 minutes would cut most training runs).
PROFILE_DEFAULTS = {"time_min": 60, "parallelism": 16, "max_timeouts": 3, "signal_delay_s": 90}
LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # local workers have no time limit worth the name
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ grid


def names(value, what: str) -> list[str]:
    """``"a,b"`` or ``[a, b]`` → ``["a", "b"]``."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = [str(v).strip() for v in items if str(v).strip()]
    if not out:
        raise ConfigError(f"{what}: no names given")
    return list(dict.fromkeys(out))


@dataclass
class SweepSpec:
    """The grid of one ``harness sweep`` invocation."""

    methods: list[str]
    benches: list[str]
    seeds: list[int]
    grid: Grid  # group.key → alternatives; the grid is their product
    base: Overrides  # settings for every run (the --config file's)

    def __post_init__(self):
        self.grid, self.base = Grid(self.grid), Overrides(self.base)

    def default_name(self) -> str:
        digest = hashlib.sha256(json.dumps({**asdict(self), "base": dict(self.base)}, sort_keys=True, default=str).encode()).hexdigest()[:8]
        readable = f"{'+'.join(self.methods)}_{'+'.join(self.benches)}"
        return f"{readable[:60]}-{digest}"


@dataclass
class Run:
    """One planned run: what to run and where its record goes."""

    key: str  # <config hash>-s<seed>
    label: str
    method: str
    benchmark: str
    seed: int
    overrides: dict  # dotted key → value (``Overrides``), as resolve takes them
    config_hash: str
    run_dir: str
    threads: int = 0  # torch threads for this run (0: the task's); reproduce sets the stored run's


def plan_runs(spec: SweepSpec) -> list[Run]:
    """Resolve every grid point (validating it: unknown names, bad values, missing datasets stop the
    plan with the runner's own message); runs with the same config hash and seed are planned once.
    A grid of more than MAX_SWEEP_RUNS runs is refused before anything is resolved. Run directories
    are assigned later (``assign_run_dirs``)."""
    import math

    from harness.config import MAX_SWEEP_RUNS
    from harness.resolve import check_data, resolve

    settings = math.prod(len(values) for values in spec.grid.values())
    size = len(spec.methods) * len(spec.benches) * settings * len(spec.seeds)
    if size > MAX_SWEEP_RUNS:
        raise ConfigError(f"the sweep's grid is {size:,} runs ({len(spec.methods)} methods × {len(spec.benches)} "
                          f"benchmarks × {settings} settings × {len(spec.seeds)} seeds), and one sweep plans at most "
                          f"{MAX_SWEEP_RUNS:,}; split it into smaller sweeps")
    varying = spec.grid.varying()  # labels name only what differs between runs
    runs: dict[str, Run] = {}
    for method, bench in itertools.product(spec.methods, spec.benches):
        for setting in spec.grid.points():
            overrides = dict(spec.base.merged(setting))
            where = " ".join([method, bench, *(f"{k}={setting[k]}" for k in varying)])
            try:
                resolved = resolve(method, bench, overrides=overrides)
                check_data(resolved)
            except HarnessError as exc:
                point = " ".join([method, bench, *(f"{k}={v}" for k, v in setting.items())])
                exc.args = (f"cannot plan {point}: {exc}",)
                raise
            config_hash = resolved.config.hash()
            for seed in spec.seeds:
                key = f"{config_hash}-s{seed}"
                runs.setdefault(key, Run(key, f"{where} seed {seed}", method, bench, seed, overrides, config_hash, ""))
    return list(runs.values())


# ------------------------------------------------------------------------------------------ profiles


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` is looked up: $HARNESS_PROFILES, ./slurm/profiles, and the
    harness checkout's slurm/profiles."""
    dirs = [Path(os.environ["HARNESS_PROFILES"])] if os.environ.get("HARNESS_PROFILES") else []
    dirs += [Path.cwd() / "slurm" / "profiles", Path(__file__).resolve().parent.parent / "slurm" / "profiles"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def load_profile(name: str | None) -> tuple[dict, str]:
    """(validated profile with defaults filled in, where it came from). ``name`` is a profile name or
    a YAML file; None gives the defaults."""
    from harness.config import load_yaml

    if name is None:
        return dict(PROFILE_DEFAULTS), "defaults"
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        candidates = [d / f"{name}.yaml" for d in profile_dirs()]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(f"unknown profile '{name}'. Profiles: {', '.join(known) or '(none)'} "
                              f"(looked in {', '.join(map(str, profile_dirs()))}); or pass a YAML file")
    tree = load_yaml(path)
    profile = dict(PROFILE_DEFAULTS)
    for key, value in tree.items():
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{path}: unknown profile key '{key}'. Valid keys: {', '.join(PROFILE_KEYS)}")
        kind = PROFILE_KEYS[key][0]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
        may_be_zero = key in ("gpus_per_node", "max_timeouts", "signal_delay_s")
        if kind in (int, float) and (value < 0 or (value == 0 and not may_be_zero)):
            raise ConfigError(f"{path}: {key} must be positive, got {value}")
        if key == "setup" and not all(isinstance(line, str) for line in value):
            raise ConfigError(f"{path}: setup must be a list of shell lines, got {value!r}")
        profile[key] = value
    return profile, str(path)


def slurm_parameters(profile: dict, sweep_name: str) -> dict:
    """The profile as submitit ``SlurmExecutor.update_parameters`` arguments."""
    params = {"job_name": f"harness-{sweep_name}"}
    for key, value in profile.items():
        target = PROFILE_KEYS[key][1]
        if target == "mem":
            value = f"{int(value)}GB" if value == int(value) else f"{int(value * 1024)}MB"
        if target:
            params[target] = value
    return params


def slurm_answers() -> tuple[bool, str]:
    """Whether ``sinfo`` reaches a controller, and what it said."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return False, f"SLURM_CONF names a missing file: {conf}"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=15)
    except FileNotFoundError:
        return False, "sinfo is not installed"
    except subprocess.TimeoutExpired:
        return False, "sinfo did not answer within 15 s"
    return done.returncode == 0, (done.stderr or done.stdout).strip()


# ------------------------------------------------------------------------------------------ sweep state


class Sweep:
    """A sweep's directory: its plan, its submissions and its logs."""

    def __init__(self, runs_dir: Path, name: str):
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"sweep name '{name}' must be letters, digits and . _ + - (at most 100, "
                              f"starting with a letter or digit)")
        self.name, self.runs_dir = name, Path(runs_dir).absolute()
        self.dir = self.runs_dir / "sweeps" / name
        self.plan_path = self.dir / "plan.json"
        self.submissions_dir = self.dir / "submissions"
        self.logs_folder = self.dir / "logs" / "%j"  # submitit's folder; %j becomes the job id

    def exists(self) -> bool:
        return self.plan_path.is_file()

    def runs(self) -> list[Run]:
        if not self.exists():
            return []
        return [Run(**r) for r in json.loads(self.plan_path.read_text())["runs"]]

    def save_plan(self, runs: list[Run], grid: dict) -> None:
        created = json.loads(self.plan_path.read_text())["created"] if self.exists() else now()
        files.write_json(self.plan_path, {"name": self.name, "created": created, "updated": now(),
                                          "last_grid": grid, "runs": [asdict(r) for r in runs]})

    def submissions(self) -> list[dict]:
        if not self.submissions_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.submissions_dir.glob("*.json"))]

    def save_submission(self, submission: dict) -> None:
        number = len(list(self.submissions_dir.glob("*.json"))) if self.submissions_dir.is_dir() else 0
        first_job = next(iter(submission["jobs"].values()))
        files.write_json(self.submissions_dir / f"{number:04d}-{first_job}.json", submission)

    def latest_jobs(self) -> dict[str, dict]:
        """Run key → its latest job: {job_id, executor, submitted, host, log}."""
        latest = {}
        for sub in self.submissions():
            for key, job_id in sub["jobs"].items():
                latest[key] = {"job_id": job_id, "executor": sub["executor"], "submitted": sub["submitted"],
                               "host": sub["host"], "log": str(task_log(sub["logs_folder"], job_id))}
        return latest

    @contextmanager
    def locked(self):
        """One ``harness sweep`` at a time per sweep (plan and submissions stay consistent)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


def task_log(logs_folder: str, job_id: str) -> Path:
    """The stderr file submitit writes for a job (``<folder>/<job>_0_log.err``)."""
    from submitit.core.utils import JobPaths

    return JobPaths(logs_folder, job_id=job_id, task_id=0).stderr


def assign_run_dirs(sweep: Sweep, grid_runs: list[Run], finished: dict) -> list[Run]:
    """Fix each run's directory: the one already in the plan, else the finished record's, else a
    new one. Returns the merged plan (earlier runs first); ``grid_runs`` are updated in place."""
    from harness.store import new_run_id

    planned = {r.key: r for r in sweep.runs()}
    for run in grid_runs:
        if run.key in planned:
            run.run_dir = planned[run.key].run_dir
        elif (run.config_hash, run.seed) in finished:
            run.run_dir = finished[(run.config_hash, run.seed)]["run_dir"]
        else:
            run.run_dir = str(sweep.runs_dir / new_run_id(run.method, run.benchmark, run.seed, run.config_hash))
        planned[run.key] = run
    return list(planned.values())


def finished_index(runs_dir: Path) -> dict[tuple[str, int], dict]:
    """(config hash, seed) → the newest ``ok`` record under ``runs_dir``."""
    from harness.store import RunStore

    return RunStore(runs_dir).finished()


# ------------------------------------------------------------------------------------------ job states


def slurm_states(job_ids: set[str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Job id → (state, elapsed) from ``squeue`` (live jobs) and ``sacct`` (the rest), with warnings
    for a scheduler that did not answer."""
    states: dict[str, tuple[str, str]] = {}
    warnings = []
    user = getpass.getuser()
    for command in (["squeue", "--noheader", "--array", f"--user={user}", "--format=%i|%T|%M"],
                    ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,Elapsed"]):
        missing = job_ids - set(states)
        if not missing:
            break
        if command[0] == "sacct":
            command.append("--jobs=" + ",".join(sorted({j.split("_")[0] for j in missing})))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            warnings.append(f"{command[0]} failed ({exc}); job states may be incomplete")
            continue
        if done.returncode != 0:
            warnings.append(f"{command[0]} failed: {done.stderr.strip()}; job states may be incomplete")
            continue
        for line in done.stdout.splitlines():
            job_id, _, rest = line.partition("|")
            state, _, elapsed = rest.partition("|")
            if job_id in missing:
                states[job_id] = (state.split()[0] if state else "UNKNOWN", clock(elapsed))
    return states, warnings


def clock(elapsed: str) -> str:
    """SLURM's elapsed times (``M:SS``, ``HH:MM:SS``, ``D-HH:MM:SS``) as ``H:MM:SS``."""
    days, _, rest = elapsed.rpartition("-")
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3 or (days and not days.isdigit()):
        return elapsed
    return hms(sum(int(p) * 60**i for i, p in enumerate(reversed(parts))) + 86400 * int(days or 0))


def hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def local_worker_alive(pid: str, host: str) -> bool | None:
    """Whether the local worker (submitit's controller process) still runs; None on another host."""
    if host != socket.gethostname():
        return None
    if Path("/proc/self").is_dir():  # Linux: also tells a finished (zombie) or reused pid apart
        try:
            if b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
            # a worker this process has just forked may not have exec'd submitit yet
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return stat[0] != "Z" and int(stat[1]) == os.getpid()
        except (OSError, IndexError, ValueError):
            return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


@dataclass
class RunStatus:
    """Where one run of a sweep stands."""

    run: Run
    category: str  # done | active | failed | new
    state: str  # SLURM's state, or the local worker's
    job_id: str
    elapsed: str
    record: dict | None
    reason: str
    log: str


def assess(sweep: Sweep, runs: list[Run]) -> tuple[list[RunStatus], list[str]]:
    """Each run's status from the records, the submissions and the scheduler (see the module doc)."""
    from harness.store import read_record

    finished = finished_index(sweep.runs_dir)
    jobs = sweep.latest_jobs()
    slurm_ids = {jobs[r.key]["job_id"] for r in runs if r.key in jobs and jobs[r.key]["executor"] == "slurm"}
    states, warnings = slurm_states(slurm_ids) if slurm_ids else ({}, [])
    out = []
    for run in runs:
        job = jobs.get(run.key)
        record = read_record(run.run_dir)
        # a record started before the latest submission is from an earlier attempt
        current = None if record and job and record.get("started", "") < job["submitted"] else record
        ok = finished.get((run.config_hash, run.seed))
        job_id, log = (job["job_id"], job["log"]) if job else ("", "")
        if job is None:
            state, elapsed = "", ""
        elif job["executor"] == "slurm":
            state, elapsed = states.get(job_id, ("UNKNOWN", ""))
        else:
            state, elapsed = local_state(job, current), ""
        elapsed = elapsed or record_elapsed(current)
        if state in ACTIVE_STATES and not (current and current.get("status") in ("ok", "failed")):
            out.append(RunStatus(run, "active", state, job_id, elapsed, current, "", log))
        elif ok:
            out.append(RunStatus(run, "done", "COMPLETED", job_id if ok["run_dir"] == run.run_dir else "",
                                 elapsed if ok["run_dir"] == run.run_dir else record_elapsed(ok), ok, "", log))
        elif current and current.get("status") == "failed":
            reason = current.get("reason") or "failed"
            out.append(RunStatus(run, "failed", "FAILED", job_id, elapsed, current, reason, log))
        elif job:
            why = f"job {job_id} ended {state} without a result" if state != "UNKNOWN" else \
                  f"the scheduler has no record of job {job_id} and the run has no result"
            out.append(RunStatus(run, "failed", state, job_id, elapsed, current, why, log))
        else:
            out.append(RunStatus(run, "new", "NOT SUBMITTED", "", "", None, "", ""))
    return out, warnings


def local_state(job: dict, record: dict | None) -> str:
    """A local run's state in SLURM's words: PENDING/RUNNING while its worker lives, STOPPED after."""
    alive = local_worker_alive(job["job_id"], job["host"])
    if alive is None:
        return f"UNKNOWN (local job on {job['host']})"
    if not alive:
        return "STOPPED"
    return "RUNNING" if record and record.get("status") == "running" else "PENDING"


def record_elapsed(record: dict | None) -> str:
    """H:MM:SS from the record's start to its end (or to now while it runs)."""
    if not record or not record.get("started"):
        return ""
    start = datetime.fromisoformat(record["started"])
    end = datetime.fromisoformat(record["finished"]) if record.get("finished") else datetime.now(timezone.utc)
    return hms(max(0, int((end - start).total_seconds())))


# ------------------------------------------------------------------------------------------ the task


class SweepTask:
    """What one submitit job runs: its planned runs, one after the other, each with
    ``execute(resume=True)`` in its fixed run directory.

    Checkpointable: on a time limit or preemption SLURM sends USR2, submitit calls ``checkpoint()``
    and requeues the job; the restarted task resumes each unfinished run from the runner's last
    checkpoint (a finished one is returned as is). A requeue from outside (``scontrol requeue``)
    restarts the same pickled task with the same effect. A run that raises is recorded failed by
    the runner; the task goes on with its other runs, then raises, so the job ends FAILED.
    """

    def __init__(self, runs: list[Run], device: str, env: dict[str, str], threads: int | None):
        self.runs, self.device, self.env, self.threads = runs, device, env, threads

    def __call__(self) -> list[dict]:
        for key, value in self.env.items():
            if key.startswith("HARNESS_") or key not in os.environ:
                os.environ[key] = value
        import torch

        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
        records, failures = [], []
        for run in self.runs:
            if run.threads or threads:
                torch.set_num_threads(run.threads or threads)
            try:
                records.append(execute_run(run, self.device))
            except Exception as exc:
                traceback.print_exc()
                written = getattr(exc, "written_files", [])
                failures.append(f"{run.label}: {type(exc).__name__}: {exc}"
                                + (f" (record: {written[-1]})" if written else ""))
                print(f"harness: run failed: {failures[-1]}", file=sys.stderr, flush=True)
        if failures:
            raise RunFailed(f"{len(failures)} of {len(self.runs)} runs failed:\n  " + "\n  ".join(failures))
        return records

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def execute_run(run: Run, device: str) -> dict:
    """Run (or resume) one planned run; refuses when its configuration no longer resolves to the
    planned hash (the harness or a preset changed since planning)."""
    from harness.store import summary_line
    from harness.resolve import check_data, resolve
    from harness.store import CHECKPOINT
    from harness.runner import execute

    resolved = resolve(run.method, run.benchmark, overrides=run.overrides)
    if resolved.config.hash() != run.config_hash:
        raise HarnessError(f"{run.label} now resolves to config hash {resolved.config.hash()}, not {run.config_hash} "
                           f"as planned: the harness or its presets changed since; plan the sweep again")
    check_data(resolved)
    run_dir = Path(run.run_dir)
    resuming = (run_dir / CHECKPOINT).is_file()
    print(f"{'resuming' if resuming else 'starting'} {run.label} in {run_dir}"
          f"{' from its checkpoint' if resuming else ''}", flush=True)
    record = execute(resolved, run.seed, run_dir, device=device, resume=True, progress=True)
    print(summary_line(record), flush=True)
    return record


# ------------------------------------------------------------------------------------------ submitting


def task_env() -> dict[str, str]:
    """What a task needs from the submitting shell (sbatch may be configured not to export it)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("HARNESS_")}
    if os.environ.get("SLURM_CONF"):
        keep["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return keep


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
        groups = [runs[i::lanes] for i in range(lanes)]
        threads = max(1, (os.cpu_count() or 1) // lanes)
        tasks = [SweepTask(group, device, task_env(), threads) for group in groups]
    try:
        with redirect_stderr(io.StringIO()):  # submitit echoes sbatch's complaint; the error below says it once
            jobs = ex.submit_array(tasks)
    except (UncompletedJobError, FailedSubmissionError, OSError) as exc:
        raise HarnessError(f"submitting to {executor} failed: {str(exc).strip()}") from None
    submission = {
        "executor": executor, "submitted": submitted, "host": socket.gethostname(),
        "logs_folder": str(sweep.logs_folder), "parameters": ex.parameters,
        "jobs": {run.key: job.job_id for job, group in zip(jobs, groups) for run in group},
    }
    sweep.save_submission(submission)
    return submission


def sbatch_lines(profile: dict, sweep: Sweep, count: int, parallelism: int) -> list[str]:
    """The #SBATCH lines submitit would write for an array of ``count`` tasks (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = {**slurm_parameters(profile, sweep.name), "array_parallelism": parallelism}
    text = _make_sbatch_string(command="", folder=sweep.logs_folder, map_count=count if count > 1 else None, **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")] + \
        [f"(setup) {line}" for line in profile.get("setup", [])]


# ------------------------------------------------------------------------------------------ commands


def load_sweep_file(path: str) -> dict:
    from harness.config import load_yaml

    tree = load_yaml(path)
    unknown = sorted(set(tree) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(SWEEP_FILE_KEYS)}")
    if tree.get("config"):
        tree["config"] = str(Path(path).parent / tree["config"])
    return tree


def sweep_spec(args, sweep_file: dict) -> SweepSpec:
    """The grid from the sweep file, with command-line flags taking precedence."""
    from harness.config import load_yaml

    methods = args.methods or sweep_file.get("methods")
    benches = args.benches or sweep_file.get("benches")
    if not methods or not benches:
        raise ConfigError("harness sweep needs methods and benchmarks: --methods a,b --benches x,y "
                          "(or a sweep file with methods: and benches:); see `harness list`")
    grid = Grid.from_mapping(sweep_file.get("set") or {}, args.file or "sweep file")
    grid.update(Grid.from_text(args.set or []))
    config = args.config or sweep_file.get("config")
    return SweepSpec(names(methods, "--methods"), names(benches, "--benches"),
                     parse_seeds(args.seeds if args.seeds is not None else sweep_file.get("seeds", 0)),
                     grid, Overrides.from_tree(load_yaml(config), str(config)) if config else Overrides())


def choose_executor(requested: str | None, profile_name: str | None) -> str:
    """``slurm`` or ``local``: as requested, else slurm only when ``sinfo`` answers."""
    if requested not in (None, *EXECUTORS):
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got '{requested}'")
    if requested == "local" and profile_name:
        raise ConfigError("--profile configures SLURM jobs; drop it with --executor local (use --parallelism)")
    if requested == "local":
        return "local"
    answers, said = slurm_answers()
    if answers:
        return "slurm"
    if requested == "slurm" or profile_name:
        raise HarnessError(f"no SLURM controller answers ({said}). Check SLURM_CONF, or try the local cluster: "
                           f"bash slurm/local-cluster.sh start && . /tmp/harness-slurm/env.sh; "
                           f"or run here with --executor local")
    return "local"


def cmd_sweep(args) -> int:
    sweep_file = load_sweep_file(args.file) if args.file else {}
    if args.table and (args.file or args.methods or args.benches or args.seeds or args.set or args.config):
        raise ConfigError("--table makes the runs a table spec needs (its rows, columns and seeds); "
                          "drop the grid options (FILE, --methods, --benches, --seeds, --set, --config)")
    spec = None if args.table else sweep_spec(args, sweep_file)
    profile_name = args.profile or sweep_file.get("profile")
    executor = choose_executor(args.executor or sweep_file.get("executor"), profile_name)
    profile, profile_source = load_profile(profile_name)
    parallelism = next((p for p in (args.parallelism, sweep_file.get("parallelism")) if p is not None),
                       profile["parallelism"] if executor == "slurm" else 1)
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
        raise ConfigError(f"parallelism must be a positive integer, got {parallelism!r}")
    if args.table:
        from harness.report import load_spec

        table = load_spec(Path(args.table))
        grid_runs, grid = table_runs(table), {"table": str(table.path)}
        default_name = f"table-{table.path.stem}"
    else:
        grid_runs, grid, default_name = plan_runs(spec), asdict(spec), spec.default_name()
    sweep = Sweep(Path(args.runs_dir), str(args.name or sweep_file.get("name") or default_name))
    launch = Launch(executor, profile, profile_source, parallelism, args.device)
    if args.dry_run:
        return dry_run(sweep, grid_runs, launch, args)
    launch_runs(sweep, grid_runs, grid, launch, args)
    if args.wait:
        return wait(sweep, grid_runs, args.runs_dir)
    return 0


@dataclass(frozen=True)
class Launch:
    """Where and how runs are submitted."""

    executor: str
    profile: dict
    profile_source: str
    parallelism: int
    device: str


def launch_runs(sweep: Sweep, grid_runs: list[Run], grid: dict, launch: Launch, args) -> None:
    """Plan ``grid_runs`` into ``sweep`` and submit those not done (see ``select``); prints what it did."""
    with sweep.locked():
        plan = assign_run_dirs(sweep, grid_runs, finished_index(sweep.runs_dir))
        statuses, warnings = assess(sweep, grid_runs)
        to_submit = select(statuses, args)
        for status in to_submit:
            if status.category == "done":  # --force: a fresh directory, the finished one stays as it is
                from harness.store import new_run_id

                run = status.run
                run.run_dir = str(sweep.runs_dir / new_run_id(run.method, run.benchmark, run.seed, run.config_hash))
        sweep.save_plan(plan, grid)
        submission = submit(sweep, [s.run for s in to_submit], launch.executor, launch.profile, launch.parallelism,
                            launch.device) if to_submit else None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"sweep {sweep.name}: {len(grid_runs)} runs; {describe_selection(statuses, to_submit, args)}")
    if submission:
        job_ids = sorted({j.split("_")[0] for j in submission["jobs"].values()})
        where = (f"SLURM array {job_ids[0]}, at most {launch.parallelism} at once ({launch.profile_source})"
                 if launch.executor == "slurm" else f"{len(job_ids)} local worker process(es) (pid {', '.join(job_ids)})")
        print(f"submitted {len(to_submit)} runs as {where}")
    print(f"  plan: {sweep.plan_path}\n  logs: {sweep.logs_folder.parent}\n"
          f"  follow: harness status {sweep.name} --runs-dir {sweep.runs_dir}")


def table_runs(spec) -> list[Run]:
    """Every run a table spec's measured cells need: each row × column, with the row's and the
    column's config filters as settings, and the spec's seeds for methods that train (seed 0 else)."""
    from harness.report import merge_where
    from harness.resolve import check_data, resolve

    runs: dict[str, Run] = {}
    for row in spec.rows:
        for column in spec.columns:
            where = merge_where(row, column, spec.path)
            overrides = dict(Overrides(where).grouped())
            resolved = resolve(row.method, column.benchmark, overrides=overrides)
            check_data(resolved)
            config_hash = resolved.config.hash()
            for seed in spec.seeds if resolved.method_class.trains else [0]:
                key = f"{config_hash}-s{seed}"
                label = f"{row.label} | {column.label} seed {seed}"
                runs.setdefault(key, Run(key, label, row.method, column.benchmark, seed, overrides, config_hash, ""))
    return list(runs.values())


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
        parts.append(f"{counts['failed']} failed" + (" (resubmitted: --retry-failed)" if args.retry_failed
                                                     else " (resubmit with --retry-failed)"))
    return ", ".join(parts)


def dry_run(sweep: Sweep, grid_runs: list[Run], launch: Launch, args) -> int:
    from tabulate import tabulate

    assign_run_dirs(sweep, grid_runs, finished_index(sweep.runs_dir))
    statuses, warnings = assess(sweep, grid_runs)
    chosen = {id(s) for s in select(statuses, args)}
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"sweep {sweep.name} (dry run): {len(grid_runs)} runs; "
          f"{describe_selection(statuses, [s for s in statuses if id(s) in chosen], args)}")
    rows = [[s.run.label, s.run.config_hash,
             s.category + (f" ({s.state} {s.job_id})" if s.category == "active" else ""),
             "submit" if id(s) in chosen else "skip",
             s.record["run_dir"] if s.category == "done" else s.reason] for s in statuses]
    print(tabulate(rows, headers=["run", "config", "state", "action", "record / reason"], tablefmt="simple"))
    count = len(chosen)
    if launch.executor == "slurm":
        print(f"executor slurm, profile {launch.profile_source}: one array of {count} task(s), "
              f"at most {launch.parallelism} at once")
        print("\n".join(sbatch_lines(launch.profile, sweep, max(count, 1), launch.parallelism)))
    else:
        print(f"executor local: {min(launch.parallelism, max(count, 1))} worker process(es) on this machine")
    print("dry run: nothing submitted, nothing written")
    return 0


def wait(sweep: Sweep, runs: list[Run], runs_dir) -> int:
    """Poll until no run of ``runs`` is pending or running; print the status; 1 if any failed."""
    started, last = time.monotonic(), None
    while True:
        statuses, _ = assess(sweep, runs)
        counts = Counter(s.category for s in statuses)
        line = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last = line
        if not counts["active"]:
            break
        time.sleep(min(30.0, 2.0 + (time.monotonic() - started) / 10))
    print_status(sweep, statuses, [], lines=10)
    if counts["failed"]:
        raise RunFailed(f"{counts['failed']} of {len(runs)} runs failed; see above or `harness status {sweep.name} "
                        f"--runs-dir {runs_dir}`")
    return 0


def cmd_status(args) -> int:
    runs_dir = Path(args.runs_dir)
    if args.sweep is None:
        return list_sweeps(runs_dir)
    sweep = Sweep(runs_dir, args.sweep)
    if not sweep.exists():
        import difflib

        known = sorted(p.parent.name for p in (runs_dir / "sweeps").glob("*/plan.json"))
        close = difflib.get_close_matches(args.sweep, known, n=1)
        raise HarnessError(f"no sweep '{args.sweep}' under {runs_dir / 'sweeps'}. "
                           f"Sweeps: {', '.join(known) or '(none)'}."
                           + (f" Did you mean '{close[0]}'?" if close else "") + " (--runs-dir sets where to look)")
    statuses, warnings = assess(sweep, sweep.runs())
    print_status(sweep, statuses, warnings, args.lines)
    return 0


def list_sweeps(runs_dir: Path) -> int:
    from tabulate import tabulate

    plans = sorted((runs_dir / "sweeps").glob("*/plan.json"))
    if not plans:
        print(f"no sweeps under {runs_dir / 'sweeps'}")
        return 0
    rows = []
    for plan in plans:
        sweep = Sweep(runs_dir, plan.parent.name)
        statuses, _ = assess(sweep, sweep.runs())
        counts = Counter(s.category for s in statuses)
        rows.append([sweep.name, len(statuses), counts["done"], counts["active"], counts["failed"], counts["new"],
                     json.loads(plan.read_text())["updated"]])
    print(tabulate(rows, headers=["sweep", "runs", "done", "pending/running", "failed", "not submitted", "updated"]))
    return 0


def print_status(sweep: Sweep, statuses: list[RunStatus], warnings: list[str], lines: int) -> None:
    from tabulate import tabulate

    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = []
    for s in statuses:
        if s.category == "done":
            result = f"{100 * s.record['accuracy']:.2f}% ± {100 * s.record['ci95']:.2f}"
            if s.record["run_dir"] != s.run.run_dir:
                result += " (earlier run)"
        elif s.category == "active":
            result = training_progress(Path(s.run.run_dir)) if s.record else ""
        else:
            result = s.reason.splitlines()[0][:90] if s.reason else ""
        rows.append([s.run.label, s.job_id or "-", s.state, s.elapsed or "-", result])
    print(f"sweep {sweep.name} ({sweep.dir})")
    print(tabulate(rows, headers=["run", "job", "state", "elapsed", "result"], tablefmt="simple"))
    for s in statuses:
        if s.category != "failed":
            continue
        print(f"\n{s.state} {s.run.label} (job {s.job_id or '-'}): {s.reason}")
        print(f"  run dir: {s.run.run_dir}")
        if s.log:
            log = Path(s.log)
            tail = log.read_text(errors="replace").splitlines()[-lines:] if log.is_file() else []
            print(f"  stderr: {log}" + (f" (last {len(tail)} lines):" if tail else " (not written)"))
            print("\n".join(f"    {line}" for line in tail))
    counts = Counter(s.state for s in statuses)
    print(f"\n{len(statuses)} runs: " + ", ".join(f"{n} {state.lower()}" for state, n in counts.most_common()))


def training_progress(run_dir: Path) -> str:
    """``step N/total`` from a running run's training log and configuration."""
    from harness.store import TRAIN_LOG, read_config

    try:
        last = (run_dir / TRAIN_LOG).read_text().rstrip("\n").rsplit("\n", 1)[-1].split(",")[0]
        total = read_config(run_dir)["train"]["steps"]
    except (OSError, KeyError, TypeError):
        return ""
    return f"step {last}/{total}" if last.isdigit() else ""


def add_commands(sub) -> None:
    from harness.store import default_runs_dir

    p = sub.add_parser(
        "sweep", help="run a grid of methods × benchmarks × settings × seeds as one job array (SLURM or local)",
        description="Plan a grid of runs and submit the ones not finished yet: on SLURM as one submitit job array "
                    "(requeued and resumed from checkpoints on preemption or time limit), or as worker processes "
                    "on this machine. Runs with an ok record for the same config hash and seed are skipped.")
    p.add_argument("file", nargs="?", help="sweep YAML file with any of: " + ", ".join(SWEEP_FILE_KEYS) +
                   " (command-line flags take precedence)")
    p.add_argument("--table", metavar="SPEC.yaml",
                   help="instead of a grid: every run the table spec's measured cells need (its rows × columns, "
                        "with their settings, and its seeds); finished ones are skipped")
    p.add_argument("--methods", help="comma-separated method names (see `harness list methods`)")
    p.add_argument("--benches", help="comma-separated benchmark names (see `harness list benchmarks`)")
    p.add_argument("--seeds", help="training seeds: 0-4, 0,2,5 or 0-2,7 (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=V1[,V2...]",
                   help="a setting for every run, or a grid over comma-separated values, e.g. --set train.lr=0.1,0.01; "
                        "commas inside [] or quotes stay in the value (repeatable)")
    p.add_argument("--config", help="YAML file of overrides for every run, as in `harness run --config`")
    p.add_argument("--name", help="sweep name (default: derived from the grid); reusing a name adds to that sweep")
    p.add_argument("--executor", choices=EXECUTORS, help="default: slurm when `sinfo` answers, else local")
    p.add_argument("--profile", help="SLURM profile: a name from slurm/profiles/ (or $HARNESS_PROFILES) or a YAML file")
    p.add_argument("--parallelism", type=int, help="at most this many runs at once (SLURM: the array's %%N throttle, "
                                                   "default from the profile; local: worker processes, default 1)")
    p.add_argument("--device", default="auto",
                   help="auto | cpu | cuda, on the machine that runs each task (default auto)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the sbatch settings; submit nothing")
    p.add_argument("--force", action="store_true", help="rerun finished runs too (into new run directories)")
    p.add_argument("--retry-failed", action="store_true",
                   help="resubmit failed runs (each resumes from its last checkpoint)")
    p.add_argument("--wait", action="store_true", help="stay until the runs have finished and print their status; "
                                                       "exit 1 if any failed")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("status", help="every run of a sweep: job id, SLURM state, elapsed, result or failure reason",
                       description="Without SWEEP: the sweeps under the runs directory, with counts.")
    p.add_argument("sweep", nargs="?", help="sweep name (as printed by `harness sweep`)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.add_argument("--lines", type=int, default=10, help="lines of a failed task's stderr to show (default 10)")
    p.set_defaults(handler=cmd_status)
