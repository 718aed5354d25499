"""A run directory's life: where a run of one configuration and seed goes (its finished run reported, its
unfinished run resumed, else a new directory), the one process that writes it (``locked``), and its record
from ``running`` to ``ok`` or ``failed``. Checkpoints: harness/checkpoint.py; training: harness/runner.py."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness import files, kernels, provenance
from harness.distributed import SINGLE, World
from harness.errors import HarnessError, Terminated
from harness.record import SCHEMA_VERSION
from harness.settings import config_hash
from harness.store import ERROR_LOG, RESULT, RunStore, new_run_id, read_config, read_record, write_config, write_record

if TYPE_CHECKING:
    from harness.resolve import Resolved

LOCK = ".lock"  # in each run directory: held by the one process writing it


def base_record(resolved: Resolved, seed: int, run_dir: Path, device: torch.device, world: World = SINGLE) -> dict:
    """A new run's ``running`` record: what it is, and where and how it runs (provenance)."""
    cfg = resolved.config
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_dir.name,
        "kind": "train",
        "method": cfg.method_name,
        "benchmark": cfg.benchmark,
        "trained_on": cfg.benchmark,
        "seed": seed,
        "config_hash": config_hash(cfg),
        "head": cfg.eval.head,
        "distance": cfg.eval.distance,
        "status": "running",
        "reason": None,
        "started": provenance.now(),
        "device": provenance.device_name(device),
        "threads": torch.get_num_threads(),
        "precision": cfg.train.precision,
        "compiled": cfg.train.compile,
        "world_size": world.size,
        "backend": world.backend or None,
        "devices": process_devices(device, world),
        "platform": provenance.platform_name(),
        "kernels": kernels.describe(device, cfg.train.kernels),
        "host": provenance.host(),
        "command": provenance.command_line(),
        "versions": provenance.versions(),
        "git": provenance.git_state(),
        "data": resolved.benchmark.data_provenance(with_train=resolved.method_class.trains),
        **resolved.benchmark.provenance(),  # a benchmark file's path and hash
    }


def process_devices(device: torch.device, world: World) -> list[str]:
    """Every process's host and device, in rank order."""
    index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
    mine = f"{provenance.host()}:{device.type}{'' if index is None else f':{index}'}"
    if world.size == 1:
        return [mine]
    import torch.distributed as dist

    everyone = [None] * world.size
    dist.all_gather_object(everyone, mine)
    return everyone


@dataclass(frozen=True)
class Placement:
    """Where a run goes: ``run_dir``; ``done`` is the finished run of its configuration and seed, if one
    exists (nothing to compute)."""

    run_dir: Path
    done: dict | None = None


def new_run_dir(runs_dir: Path, method: str, benchmark: str, seed: int, digest: str) -> Path:
    """A fresh directory under ``runs_dir`` (start time, method, benchmark, seed, config hash, a random tag)."""
    return Path(runs_dir) / new_run_id(method, benchmark, seed, digest)


def place(
    runs_dir: Path,
    method: str,
    benchmark: str,
    digest: str,
    seed: int,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
) -> Placement:
    """``run_dir`` when given; else, with ``resume``, the finished run of config hash ``digest`` and ``seed``
    under ``runs_dir`` (``done``) or its newest unfinished one; else a new directory."""
    if run_dir is not None:
        return Placement(Path(run_dir))
    if resume:
        store = RunStore(Path(runs_dir))
        done = store.newest_ok(digest, seed)
        if done:
            return Placement(Path(done["run_dir"]), done)
        pending = store.latest(digest, seed)
        if pending:
            return Placement(Path(pending["run_dir"]))
    return Placement(new_run_dir(runs_dir, method, benchmark, seed, digest))


def check_target(run_dir: Path, resume: bool) -> dict | None:
    """The record already in ``run_dir`` (None: a new run), or a HarnessError where a run may not write there:
    it holds a run and ``resume`` is off, or it is a non-empty folder that is not a run directory."""
    existing = read_record(run_dir)
    if existing and not resume:
        raise HarnessError(f"{run_dir} already holds a run ({existing['status']}); pass --resume to continue it")
    if not existing and run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise HarnessError(
            f"{run_dir} is not empty and holds no run record, so it is not a run directory: a run "
            "writes only into a new or empty folder (or continues its own with --resume); "
            "choose another --run-dir"
        )
    return existing


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock``: one writer per run directory. If another process holds it, a HarnessError
    names that process (its note in the lock file) and nothing in the directory is changed."""
    with ExitStack() as stack:
        try:
            handle = stack.enter_context(files.locked(run_dir / LOCK, wait=False))
        except BlockingIOError:
            holder = (run_dir / LOCK).read_text(encoding="utf-8").strip() or "another process"
            raise HarnessError(
                f"{run_dir} is in use by {holder}: one process writes a run directory at a time; "
                f"wait for it to finish (or stop it), then resume"
            ) from None
        except OSError as exc:
            if exc.filename is not None:  # the folder or the lock file cannot be made
                raise HarnessError(
                    f"cannot write the run directory {run_dir}: {exc.strerror or exc}; pass a writable --runs-dir"
                ) from None
            # a filesystem without flock (e.g. Lustre mounted without it): run, but say that nothing is guarded
            print(
                f"harness: warning: cannot lock {run_dir / LOCK} ({exc.strerror}); a second process writing this "
                f"run directory would not be stopped",
                file=sys.stderr,
            )
        else:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on host {provenance.host()} since {provenance.now()}\n")
            handle.flush()
        yield


@contextmanager
def lifecycle(
    run_dir: Path, config: dict, record: dict, device: torch.device, finish: Callable[[dict], None] | None = None
) -> Iterator[dict]:
    """A run directory's record from start to end, for every command that makes one (run, eval): its config
    and ``running`` record written, then, when the block ends, the terminal record: ``ok`` with when it
    finished, its wall time and peak memory, or ``failed`` with why (``fail_record``; the exception goes on).
    ``finish`` then gets the terminal record (the loggers' last words). The caller holds the lock (``locked``)."""
    started = time.perf_counter()
    start_record(run_dir, config, record)
    try:
        yield record
    except (Exception, KeyboardInterrupt) as exc:
        fail_record(run_dir, record, exc)
        if finish:
            finish(record)
        raise
    record.update(
        status="ok",
        finished=provenance.now(),
        wall_seconds=round(time.perf_counter() - started, 3),
        peak_memory_mb=round(provenance.peak_memory_mb(device), 1),
    )
    finish_record(run_dir, record)
    if finish:
        finish(record)


def start_record(run_dir: Path, config: dict, record: dict) -> None:
    """Write a run's config and its ``running`` record; a directory that cannot be written is a HarnessError."""
    try:
        write_config(run_dir, config)
        write_record(run_dir, record)
    except OSError as exc:
        raise HarnessError(
            f"cannot write the run directory {run_dir}: {exc.strerror or exc}; pass a writable --runs-dir"
        ) from None


def fail_record(run_dir: Path, record: dict, exc: BaseException) -> None:
    """Write ``error.log`` and the failed record for ``exc``; ``exc.written_files`` then lists the
    files that could be written, so that messages point only at files that exist."""
    reason = (
        "terminated (SIGTERM)"
        if isinstance(exc, Terminated)
        else "interrupted"
        if isinstance(exc, KeyboardInterrupt)
        else f"{type(exc).__name__}: {exc}"
    )
    record.update(status="failed", reason=reason, finished=provenance.now())
    written: list[Path] = []
    try:  # the record first: on a full disk it is what must not stay "running"
        write_record(run_dir, record)
        written.append(run_dir / RESULT)
    except OSError as error:
        if error.errno == errno.ENOSPC and overwrite_in_place(run_dir / RESULT, record):
            written.append(run_dir / RESULT)
    try:
        files.write_text(run_dir / ERROR_LOG, "".join(traceback.format_exception(exc)))
        written.insert(0, run_dir / ERROR_LOG)
    except OSError:
        pass
    exc.written_files = written


def overwrite_in_place(path: Path, record: dict) -> bool:
    """On a full disk, where no temporary file can be made: the record written compactly over the blocks its
    ``running`` form already holds (smaller than that, so no new block is needed). Whether it was written."""
    data = json.dumps({k: v for k, v in record.items() if k != "run_dir"}, separators=(",", ":"), default=str)
    try:
        with open(path, "r+b") as fh:
            if len(data.encode()) > os.fstat(fh.fileno()).st_size:
                return False
            fh.write(data.encode())
            fh.truncate()
        return True
    except OSError:
        return False


def finish_record(run_dir: Path, record: dict) -> None:
    """The ``ok`` record; a resumed run that finishes leaves no stale traceback."""
    (run_dir / ERROR_LOG).unlink(missing_ok=True)
    write_record(run_dir, record)


def mark_dead(run_dir: Path, reason: str) -> None:
    """A run whose process died before recording why: its ``running`` record becomes failed with ``reason``."""
    record = read_record(run_dir)
    if record and record.get("status") == "running":
        record.update(status="failed", reason=reason, finished=provenance.now())
        write_record(run_dir, record)


RECORD_MARKS = ("run_id", "kind", "method", "benchmark", "seed", "config_hash", "status", "started")


def not_a_run(run_dir: Path, record: dict) -> str | None:
    """Why ``run_dir`` is not a run directory the harness made (None: it is): its record must carry the fields
    every harness record has, under its own directory's name, beside a ``config.yaml`` of the same method and
    benchmark; a symbolic link is never taken for the run it points to."""
    if run_dir.is_symlink():
        return f"a symbolic link (to {os.readlink(run_dir)}), not a run directory itself"
    missing = [key for key in RECORD_MARKS if key not in record]
    if missing:
        return f"its result.json is not a harness run record (no {', '.join(missing[:3])})"
    if record["run_id"] != run_dir.name:
        return f"its record names another run ({record['run_id']})"
    try:
        config = read_config(run_dir)
    except (OSError, HarnessError):
        return "it has no readable config.yaml of a harness run"
    if (config.get("method_name"), config.get("benchmark")) != (record["method"], record["benchmark"]):
        return "its config.yaml is of another method or benchmark than its record"
    return None


def unfinished(runs_dir: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The runs under ``runs_dir`` that failed, were interrupted, or are marked running though no process holds
    them (it died): what ``harness prune`` removes; and the folders that hold a record but are not run
    directories the harness made (``not_a_run``), with why: prune never touches those. A run that a live
    process holds is left out."""
    found, foreign = [], []
    store = RunStore(Path(runs_dir))
    for record in store.records:
        run_dir = Path(record["run_dir"])
        if record.get("status") == "ok" and not run_dir.is_symlink():
            continue
        if reason := not_a_run(run_dir, record):
            foreign.append((run_dir, reason))
            continue
        if record.get("status") == "running" and held(run_dir):
            continue
        found.append(record)
    foreign += [(path.parent, "its result.json cannot be read as a record") for path in store.unreadable]
    return found, foreign


def held(run_dir: Path) -> bool:
    """Whether a live process holds ``run_dir``'s lock."""
    try:
        with files.locked(run_dir / LOCK, wait=False):
            return False
    except BlockingIOError:
        return True


def remove(record: dict) -> None:
    """Delete a run's directory, if it is still the run ``record`` read (its record unchanged, not held)."""
    run_dir = Path(record["run_dir"])
    current = read_record(run_dir)
    if (
        current is None
        or current.get("status") != record.get("status")
        or current.get("started") != record.get("started")
    ):
        raise HarnessError(
            f"{run_dir} changed since it was listed (now {current and current.get('status')}); "
            "nothing of it was removed: run `harness prune` again"
        )
    if held(run_dir):
        raise HarnessError(f"{run_dir} is held by a running process; nothing of it was removed")
    if reason := not_a_run(run_dir, current):
        raise HarnessError(f"{run_dir} is not a run directory the harness made ({reason}); nothing of it was removed")
    shutil.rmtree(run_dir)
