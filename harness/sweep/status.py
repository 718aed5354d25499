"""Where each run of a sweep stands, from the records, the submissions and the scheduler, and
``harness status``. A run is one of:

- done: an ``ok`` record with the same config hash and seed exists anywhere in the runs directory;
  skipped (``--force`` reruns it into a new run directory);
- active: its latest job is pending or running; never submitted twice;
- failed: its record says failed, or its job ended without a result (cancelled, node failure,
  out of memory); resubmitted with ``--retry-failed``, resuming from its last checkpoint;
- new: never submitted; submitted.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import HarnessError
from harness.sweep.plan import Run, Sweep

# SLURM states in which a job may still produce its result.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "CONFIGURING",
        "COMPLETING",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)


# ------------------------------------------------------------------------------------------ job states


def slurm_states(job_ids: set[str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Job id → (state, elapsed) from ``squeue`` (live jobs) and ``sacct`` (the rest), with warnings
    for a scheduler that did not answer."""
    states: dict[str, tuple[str, str]] = {}
    warnings = []
    user = getpass.getuser()
    for command in (
        ["squeue", "--noheader", "--array", f"--user={user}", "--format=%i|%T|%M"],
        ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,Elapsed"],
    ):
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
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
            return stat[0] != "Z" and int(stat[1]) == os.getpid()
        except (OSError, IndexError, ValueError):
            return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


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


# ------------------------------------------------------------------------------------------ run states


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

    finished = sweep.finished()
    jobs = sweep.latest_jobs()
    slurm_ids = {jobs[r.key]["job_id"] for r in runs if r.key in jobs and jobs[r.key]["executor"] == "slurm"}
    states, warnings = slurm_states(slurm_ids) if slurm_ids else ({}, [])
    out = []
    for run in runs:
        job = jobs.get(run.key)
        record = read_record(run.run_dir)
        # a record started before the latest submission is from an earlier attempt
        current = None if record and job and record.get("started", "") < job["submitted"] else record
        # its own record may have turned ok after the scan above (a run finishing while squeue answered)
        ok = finished.get((run.config_hash, run.seed)) or (
            current if current and current.get("status") == "ok" else None
        )
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
            out.append(
                RunStatus(
                    run,
                    "done",
                    "COMPLETED",
                    job_id if ok["run_dir"] == run.run_dir else "",
                    elapsed if ok["run_dir"] == run.run_dir else record_elapsed(ok),
                    ok,
                    "",
                    log,
                )
            )
        elif current and current.get("status") == "failed":
            reason = current.get("reason") or "failed"
            out.append(RunStatus(run, "failed", "FAILED", job_id, elapsed, current, reason, log))
        elif job:
            why = (
                f"job {job_id} ended {state} without a result"
                if state != "UNKNOWN"
                else f"the scheduler has no record of job {job_id} and the run has no result"
            )
            out.append(RunStatus(run, "failed", state, job_id, elapsed, current, why, log))
        else:
            out.append(RunStatus(run, "new", "NOT SUBMITTED", "", "", None, "", ""))
    return out, warnings


# ------------------------------------------------------------------------------------------ harness status


def cmd_status(args) -> int:
    runs_dir = Path(args.runs_dir)
    if args.sweep is None:
        return list_sweeps(runs_dir)
    sweep = Sweep(runs_dir, args.sweep)
    if not sweep.exists():
        import difflib

        known = sorted(p.parent.name for p in (runs_dir / "sweeps").glob("*/plan.json"))
        close = difflib.get_close_matches(args.sweep, known, n=1)
        raise HarnessError(
            f"no sweep '{args.sweep}' under {runs_dir / 'sweeps'}. "
            f"Sweeps: {', '.join(known) or '(none)'}."
            + (f" Did you mean '{close[0]}'?" if close else "")
            + " (--runs-dir sets where to look)"
        )
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
        rows.append(
            [
                sweep.name,
                len(statuses),
                counts["done"],
                counts["active"],
                counts["failed"],
                counts["new"],
                sweep.read_plan().get("updated", ""),
            ]
        )
    print(tabulate(rows, headers=["sweep", "runs", "done", "pending/running", "failed", "not submitted", "updated"]))
    return 0


def print_status(sweep: Sweep, statuses: list[RunStatus], warnings: list[str], lines: int) -> None:
    from tabulate import tabulate

    from harness.store import score_text

    print_warnings(warnings)
    rows = []
    for s in statuses:
        if s.category == "done":
            result = score_text(s.record)
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
            tail = log.read_text(errors="replace", encoding="utf-8").splitlines()[-lines:] if log.is_file() else []
            print(f"  stderr: {log}" + (f" (last {len(tail)} lines):" if tail else " (not written)"))
            print("\n".join(f"    {line}" for line in tail))
    counts = Counter(s.state for s in statuses)
    print(f"\n{len(statuses)} runs: " + ", ".join(f"{n} {state.lower()}" for state, n in counts.most_common()))


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def training_progress(run_dir: Path) -> str:
    """``step N/total`` from a running run's training log and configuration."""
    from harness.store import TRAIN_LOG, read_config

    try:
        last = (run_dir / TRAIN_LOG).read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1].split(",")[0]
        total = read_config(run_dir)["train"]["steps"]
    except (OSError, KeyError, TypeError):
        return ""
    return f"step {last}/{total}" if last.isdigit() else ""
