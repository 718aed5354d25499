"""The one training runner shared by every method.

``execute`` seeds everything, loads the benchmark, trains (by steps and/or a time budget) with a
progress bar, CSV curves, periodic validation and checkpoints, resumes from the last checkpoint,
scores the fixed test episodes and writes the run's record. A crash or divergence (non-finite
loss) is recorded as ``failed`` with the reason, never as a result.
"""

from __future__ import annotations

import csv
import fcntl
import math
import os
import random
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness import compute, files, kernels, loggers, provenance
from harness.checkpoint import RESUME_FIX, load_checkpoint, read_checkpoint, save_checkpoint
from harness.distributed import SINGLE, World, replace_batchnorm
from harness.config import check_seed
from harness.errors import ConfigError, HarnessError, RunFailed, Terminated
from harness.evaluation import EvalResult, evaluate
from harness.config import RunConfig
from harness.method import Method, MethodEnv, TrainData
from harness.optim import Optimization
from harness.protocol import BenchmarkData
from harness.resolve import Resolved
from harness.settings import config_hash
from harness.store import (
    CHECKPOINT, ERROR_LOG, RESULT, TRAIN_LOG, read_record, write_config, write_record, write_scores,
)

LOCK = ".lock"  # in each run directory: held (flock) by the one process writing it


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got '{name}'")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch here; use --device cpu or auto")
    return torch.device(name)


def limit_threads() -> None:
    """Under SLURM, use the CPUs allotted to the task (oversubscribed OpenMP threads crawl)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        torch.set_num_threads(int(cpus))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_method(resolved: Resolved, seed: int, device: torch.device, world: World = SINGLE) -> Method:
    """The method, initialised from ``seed`` (identically on every process of ``world``) and moved to
    ``device``; on several processes its batch norm spans them where the method splits batches, and with
    ``train.exact_batchnorm`` the harness computes every batch norm's statistics (harness/distributed.py)."""
    cfg, dataset = resolved.config, resolved.benchmark.dataset
    env = MethodEnv(dataset.channels, cfg.data.image_size, dataset.mean, dataset.std, device,
                    ways=cfg.bench.ways, shots=cfg.bench.shots, batch_size=cfg.train.batch_size, views=cfg.views,
                    world=world)
    seed_everything(seed)
    method = resolved.method_class(cfg.method, env)
    synchronised = world.size > 1 and method.synced_batchnorm and cfg.train.sync_batchnorm
    if synchronised or cfg.train.exact_batchnorm:
        replace_batchnorm(method, synchronised)
    return method.to(device)


def training_data(method: Method, data: BenchmarkData) -> TrainData:
    """The training split on the method's device; labels only for a method that uses them."""
    device, labels = method.env.device, method.uses_labels
    return TrainData(images=data.train.images.to(device),
                     labels=data.train.labels.to(device) if labels else None,
                     num_classes=data.train.num_classes if labels else None)


def budgeted(resolved: Resolved, seed: int, device: torch.device) -> RunConfig:
    """The configuration training runs under: with ``train.budget_flops``, ``train.steps`` is the number of
    steps the budget buys, from the FLOPs of a throwaway copy's setup and first two steps (counts depend
    only on shapes, so a replay derives the same steps). The stored configuration and its hash keep the
    budget, not the steps."""
    cfg = resolved.config
    if not cfg.train.budget_flops:
        return cfg
    probe = build_method(resolved, seed, device)
    if probe.phase_starts(probe.cfg) != [0]:
        raise ConfigError(f"train.budget_flops works for methods whose steps are all alike; {cfg.method_name}'s "
                          "training has phases (harness/compute.py): set train.steps instead")
    train_data = training_data(probe, resolved.benchmark.load(cfg, with_train=True))
    with compute.counting() as setup:
        probe.setup(train_data)
    optimization = Optimization(probe.parameter_groups(), cfg.train, device)
    generator, counts = torch.Generator().manual_seed(seed), []
    for step in range(2):
        with compute.counting() as count:
            with optimization.autocast():
                outputs = probe.training_step(train_data, step, 0.0, generator)
            optimization.step(outputs)
        counts.append(count.total)
    once = max(0, counts[0] - counts[1])
    steps = compute.steps_for_budget(cfg.train.budget_flops, setup.total + once, counts[1])
    return replace(cfg, train=replace(cfg.train, steps=steps))


def check_world(resolved: Resolved, procs: int) -> None:
    """A run splits over ``procs`` processes only where its method says how, in equal shares."""
    if procs == 1:
        return
    cls, cfg = resolved.method_class, resolved.config
    if not cls.splits:
        from harness.methods import METHODS

        able = [e.name for e in METHODS if getattr(e.load(), "splits", "")]
        raise ConfigError(f"{cfg.method_name} runs on one process (its training step has no split over processes); "
                          f"--procs {procs} works for {', '.join(able)}; use --procs 1")
    cls.check_world(cfg, procs)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_record(resolved: Resolved, seed: int, run_dir: Path, device: torch.device, world: World = SINGLE) -> dict:
    cfg = resolved.config
    return {
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
        "started": now(),
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


class TrainLog:
    """``train_log.csv``: one row per logged step; on resume, rows past the checkpoint are dropped."""

    FIXED = ["step", "seconds", "lr"]

    def __init__(self, path: Path, keep_until: int):
        self.path, self.columns = path, None
        if path.is_file():
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.columns = reader.fieldnames
                rows = [r for r in reader if int(r["step"]) <= keep_until]
            with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, self.columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.columns is None:
            self.columns = self.FIXED + [k for k in row if k not in self.FIXED and k != "val_accuracy"] + ["val_accuracy"]
            with open(self.path, "w", newline="") as fh:
                csv.DictWriter(fh, self.columns, lineterminator="\n").writeheader()
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns, extrasaction="ignore", restval="", lineterminator="\n").writerow(row)


def training_progress(step: int, seconds: float, steps: int, budget_seconds: float) -> float:
    """How far training is, 0..1: by steps, or by time when a budget would end it sooner."""
    by_steps = step / steps if steps else 1.0
    return min(1.0, max(by_steps, seconds / budget_seconds if budget_seconds else 0.0))


def train(method: Method, cfg: RunConfig, data: BenchmarkData, run_dir: Path, seed: int, resume: bool,
          show_progress: bool) -> dict:
    """The shared loop. Returns training facts for the record (steps, seconds, validation accuracy).
    On several processes each trains its share in lockstep; only process 0 writes or validates."""
    device, tc, world = method.env.device, cfg.train, method.env.world
    train_data = training_data(method, data)
    with compute.counting() as setup:
        method.setup(train_data)
    optimization = Optimization(method.parameter_groups(), tc, device, world)
    if tc.compile:
        for module in method.children():
            module.compile()
    generator = torch.Generator().manual_seed(seed)
    checkpoint = run_dir / CHECKPOINT
    step, seconds, done, counts = 0, 0.0, False, {}
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, method, optimization, generator)
        step, seconds, done, counts = state["step"], state["train_seconds"], state["done"], state.get("flops", {})
    starts = method.phase_starts(method.cfg)
    watched = compute.watched_steps(starts, tc.steps)
    writes = world.is_main
    log = TrainLog(run_dir / TRAIN_LOG, keep_until=step) if writes else None
    board = loggers.TrainLoggers(run_dir, cfg.log, step, seconds) if writes else None
    budget = tc.budget_minutes * 60
    val_accuracy = None
    bar = tqdm(total=tc.steps, initial=step, desc=f"{cfg.method_name} {cfg.benchmark}", unit="step",
               disable=not (show_progress and writes), mininterval=0.5 if sys.stderr.isatty() else 30,
               dynamic_ncols=True)
    method.train()
    while not done and step < tc.steps and not (budget and seconds >= budget):
        started = time.perf_counter()
        progress = training_progress(step, seconds, tc.steps, budget)
        lr = optimization.schedule(progress)
        with compute.counting(step in watched and step not in counts) as count:
            with optimization.autocast():
                outputs = method.training_step(train_data, step, progress, generator)
            metrics = optimization.step(outputs)
        if count.total:
            counts[step] = count.total * world.size  # equal shares
        step += 1
        logged = step % tc.log_every == 0 or step == tc.steps
        validate = data.val_episodes is not None and tc.val_every and step % tc.val_every == 0
        if logged or validate:
            values = world.average_scalars({k: float(v) for k, v in metrics.items()})
            if not all(math.isfinite(v) for v in values.values()):
                bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
                raise RunFailed(f"training diverged at step {step}: {bad}; lower train.lr or check the inputs")
        # training time only (validation is not charged to the budget); under a time budget process 0's
        # clock decides for all (without one, every process runs the same steps: no collective needed)
        seconds += time.perf_counter() - started
        if budget:
            seconds = world.broadcast_float(seconds)
        if (logged or validate) and writes:
            row = {"step": step, "seconds": round(seconds, 3), "lr": lr, **values}
            if validate:
                val_accuracy = validation_accuracy(method, cfg, data)
                row["val_accuracy"] = val_accuracy
                method.train()
            log.write(row)
            board.write(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k == "loss"} |
                            ({"val": f"{val_accuracy:.3f}"} if val_accuracy is not None else {}))
        bar.update(1)
        if step % tc.checkpoint_every == 0 and writes:
            save_checkpoint(checkpoint, method, optimization, step, seconds, generator, done=False, flops=counts)
    bar.close()
    if data.val_episodes is not None and writes:
        val_accuracy = validation_accuracy(method, cfg, data)
    if writes:
        save_checkpoint(checkpoint, method, optimization, step, seconds, generator, done=True, flops=counts)
    return {"steps": step, "train_seconds": round(seconds, 3), "val_accuracy": val_accuracy,
            "budget_exhausted": bool(budget and seconds >= budget and step < tc.steps),
            "flops": compute.training_flops(setup.total, starts, counts, step)}


def validation_accuracy(method: Method, cfg: RunConfig, data: BenchmarkData) -> float:
    return evaluate(method, data.val.images, data.val_episodes, cfg.eval.head, cfg.eval.batch_size,
                    **cfg.eval.head_settings()).mean


def score(method: Method, cfg: RunConfig, data: BenchmarkData) -> EvalResult:
    """The fixed test episodes scored with ``cfg.eval`` (head, distance, batch size)."""
    return evaluate(method, data.test.images, data.test_episodes, cfg.eval.head, cfg.eval.batch_size,
                    **cfg.eval.head_settings())


def result_fields(result: EvalResult, episodes_digest: str) -> dict:
    return {
        "accuracy": result.mean,
        "error": 1.0 - result.mean,
        "ci95": result.ci95,
        "episodes": int(len(result.accuracies)),
        "queries_per_episode": int(result.correct.shape[1]),
        "episode_digest": episodes_digest,
        "head": result.head,
        "eval_seconds": round(result.seconds, 3),
    }


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (an exclusive ``flock``, which the OS releases when the process ends,
    even on kill -9): one writer per run directory. If another process holds it, a HarnessError
    names that process and nothing in the directory is changed."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "a+")  # never truncates: the holder's note stays readable
    except OSError as exc:
        raise HarnessError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}; "
                           f"pass a writable --runs-dir") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise HarnessError(f"{run_dir} is in use by {holder}: one process writes a run directory at a time; "
                               f"wait for it to finish (or stop it), then resume") from None
        except OSError as exc:  # e.g. Lustre mounted without flock: run, but say that nothing is guarded
            print(f"harness: warning: cannot lock {run_dir / LOCK} ({exc.strerror}); a second process writing this "
                  f"run directory would not be stopped", file=sys.stderr)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on host {provenance.host()} since {now()}\n")
        handle.flush()
        yield


def start_record(run_dir: Path, config: dict, record: dict) -> None:
    """Write a run's config and its ``running`` record; a directory that cannot be written is a HarnessError."""
    try:
        write_config(run_dir, config)
        write_record(run_dir, record)
    except OSError as exc:
        raise HarnessError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}; "
                           f"pass a writable --runs-dir") from None


def record_failure(run_dir: Path, record: dict, exc: BaseException) -> None:
    """Write ``error.log`` and the failed record for ``exc``; ``exc.written_files`` then lists the
    files that could be written, so that messages point only at files that exist."""
    reason = ("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted" if isinstance(exc, KeyboardInterrupt)
              else f"{type(exc).__name__}: {exc}")
    record.update(status="failed", reason=reason, finished=now())
    written: list[Path] = []
    try:
        files.write_text(run_dir / ERROR_LOG, "".join(traceback.format_exception(exc)))
        written.append(run_dir / ERROR_LOG)
        write_record(run_dir, record)
        written.append(run_dir / RESULT)
    except OSError:
        pass
    exc.written_files = written


def execute(resolved: Resolved, seed: int, run_dir: Path, device: str = "auto", resume: bool = False,
            progress: bool = True, world: World = SINGLE) -> dict:
    """Run (or resume) one configuration with one seed into ``run_dir``; returns the final record.

    The seed, the device and (on resume) the checkpoint are checked before anything is written; the
    directory is locked for the whole run (``run_lock``). A failure is recorded (``record_failure``)
    and re-raised. On several processes (``world``), process 0 does all of this and the others only
    train their shares (``follow``)."""
    run_dir = Path(run_dir)
    check_seed(seed)
    if not world.is_main:
        return follow(resolved, seed, run_dir, resolve_device(device), resume, world)
    existing = read_record(run_dir)
    if existing and not resume:
        raise HarnessError(f"{run_dir} already holds a run ({existing['status']}); pass --resume to continue it")
    if existing and existing.get("status") == "ok":
        return existing  # read_record adds run_dir
    if not existing and run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise HarnessError(f"{run_dir} is not empty and holds no run record, so it is not a run directory: a run "
                           "writes only into a new or empty folder (or continues its own with --resume); "
                           "choose another --run-dir")
    torch_device = resolve_device(device)
    with run_lock(run_dir):
        if resume and (run_dir / CHECKPOINT).is_file():
            read_checkpoint(run_dir / CHECKPOINT, fix=RESUME_FIX, mmap=True)
        return _execute_locked(resolved, seed, run_dir, torch_device, resume, progress, world)


def follow(resolved: Resolved, seed: int, run_dir: Path, torch_device: torch.device, resume: bool, world: World) -> dict:
    """Process 1.. of a run: the collectives of process 0's ``_execute_locked`` in the same order, training
    its share of every step (resuming from process 0's checkpoint), writing nothing."""
    limit_threads()
    process_devices(torch_device, world)
    config = budgeted(resolved, seed, torch_device)
    method = build_method(resolved, seed, torch_device, world)
    data = resolved.benchmark.load(resolved.config, with_train=True)
    return {"rank": world.rank, **train(method, config, data, run_dir, seed, resume, False)}


def _execute_locked(resolved: Resolved, seed: int, run_dir: Path, torch_device: torch.device, resume: bool,
                    progress: bool, world: World = SINGLE) -> dict:
    limit_threads()
    record = base_record(resolved, seed, run_dir, torch_device, world)
    wall_started = time.perf_counter()
    start_record(run_dir, resolved.config.to_dict(), record)
    try:
        config = budgeted(resolved, seed, torch_device)  # before the method: it re-seeds
        method = build_method(resolved, seed, torch_device, world)
        data = resolved.benchmark.load(resolved.config, with_train=method.trains)
        if method.trains:
            record.update(train(method, config, data, run_dir, seed, resume, progress))
            if config.train.budget_flops:
                record["flops"]["budget"] = config.train.budget_flops
        else:
            record.update(steps=0, train_seconds=0.0, val_accuracy=None, flops=compute.training_flops(0, [], {}, 0))
        if resolved.config.eval.test:
            with compute.counting() as evaluation:
                result = score(method, resolved.config, data)
            record["flops"]["eval"] = evaluation.total
            write_scores(run_dir, result.accuracies, result.correct)
            record.update(result_fields(result, data.test_episodes.digest))
        record.update(status="ok", finished=now(), wall_seconds=round(time.perf_counter() - wall_started, 3),
                      peak_memory_mb=round(provenance.peak_memory_mb(torch_device), 1))
    except (Exception, KeyboardInterrupt) as exc:
        record_failure(run_dir, record, exc)
        loggers.finish(run_dir, resolved.config.log, record)
        raise
    (run_dir / ERROR_LOG).unlink(missing_ok=True)  # a resumed run that finishes leaves no stale traceback
    write_record(run_dir, record)
    loggers.finish(run_dir, resolved.config.log, record)
    return {**record, "run_dir": str(run_dir)}


def execute_processes(procs: int, resolved: Resolved, seed: int, run_dir: Path, device: str = "auto",
                      resume: bool = False, progress: bool = True) -> dict:
    """``execute`` as ``procs`` processes on this machine (``harness run --procs``); process 0's record."""
    from harness.distributed import launch

    try:
        launch(procs, device, execute_as, resolved, seed, str(run_dir), device, resume, progress)
    except HarnessError as exc:  # a process died: process 0 may not have recorded why
        record = read_record(Path(run_dir))
        if record and record.get("status") == "running":
            record.update(status="failed", reason=str(exc), finished=now())
            write_record(Path(run_dir), record)
        raise HarnessError(f"{exc}; the run is recorded failed in {run_dir}; continue it from its last checkpoint "
                           f"with --run-dir {run_dir} --resume") from None
    record = read_record(Path(run_dir))
    if not record or record.get("status") != "ok":
        raise HarnessError(f"the {procs}-process run in {run_dir} did not finish: "
                           f"{(record or {}).get('reason') or 'no record was written'}")
    return record


def execute_as(world: World, resolved: Resolved, seed: int, run_dir: str, device: str, resume: bool,
               progress: bool) -> None:
    """One process's part of a run (the target ``launch`` and SLURM tasks call)."""
    execute(resolved, seed, Path(run_dir), device, resume, progress, world)
