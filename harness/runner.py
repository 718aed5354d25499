"""The one training runner shared by every method.

``execute`` seeds everything, loads the benchmark, trains (by steps and/or a time budget) with a
progress bar, CSV curves, periodic validation and checkpoints, resumes from the last checkpoint,
scores the fixed test episodes and writes the run's record. A crash or divergence (non-finite
loss) is recorded as ``failed`` with the reason, never as a result.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness import compute, files, loggers, mechanisms, provenance, rundir
from harness.checkpoint import RESUME_FIX, load_checkpoint, read_checkpoint, save_checkpoint
from harness.config import RunConfig, check_seed
from harness.distributed import SINGLE, World, replace_batchnorm
from harness.errors import ConfigError, HarnessError, RunFailed
from harness.evaluation import EvalResult, evaluate
from harness.method import Method, MethodEnv, TrainData
from harness.optim import Optimization
from harness.protocol import BenchmarkData
from harness.resolve import Resolved
from harness.settings import stored_form
from harness.store import CHECKPOINT, TRAIN_LOG, read_record, write_scores


@dataclass
class RunRequest:
    """One run to make (or resume): a resolved configuration and seed, its directory (``rundir.place``), the
    device (auto, cpu or cuda), whether to continue the directory's run, a progress bar, the processes it is
    split over, and its CPU threads (None: SLURM's allotment under SLURM, else torch's default)."""

    resolved: Resolved
    seed: int
    run_dir: Path
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    world: World = SINGLE
    threads: int | None = None


@dataclass
class Prepared:
    """A run ready to train, made before its directory: the configuration training runs under (a FLOP budget
    turned into steps), the method (set up on its training data), the data, and the set-up's FLOPs."""

    config: RunConfig
    method: Method
    data: BenchmarkData
    train_data: TrainData | None
    setup_flops: int


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got '{name}'")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch here; use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """The one thread rule: ``threads`` when given (a replayed record's, a sweep's ``--threads``), else under
    SLURM the CPUs allotted to the task (oversubscribed OpenMP threads crawl), else torch's default."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    chosen = threads or (int(cpus) if cpus.isdigit() else 0)
    if chosen:
        torch.set_num_threads(chosen)


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
    env = MethodEnv(
        dataset.channels,
        cfg.data.image_size,
        dataset.mean,
        dataset.std,
        device,
        ways=cfg.bench.ways,
        shots=cfg.bench.shots,
        batch_size=cfg.train.batch_size,
        views=cfg.views,
        world=world,
    )
    seed_everything(seed)
    method = resolved.method_class(cfg.method, env)
    synchronised = world.size > 1 and method.synced_batchnorm and cfg.train.sync_batchnorm
    if synchronised or cfg.train.exact_batchnorm:
        replace_batchnorm(method, synchronised)
    return method.to(device)


def training_data(method: Method, data: BenchmarkData) -> TrainData:
    """The training split on the method's device; labels only for a method that uses them."""
    device, labels = method.env.device, method.uses_labels
    return TrainData(
        images=data.train.images.to(device),
        labels=data.train.labels.to(device) if labels else None,
        num_classes=data.train.num_classes if labels else None,
    )


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
        raise ConfigError(
            f"train.budget_flops works for methods whose steps are all alike; {cfg.method_name}'s "
            "training has phases (harness/compute.py): set train.steps instead"
        )
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
        raise ConfigError(
            f"{cfg.method_name} runs on one process (its training step has no split over processes); "
            f"--procs {procs} works for {', '.join(able)}; use --procs 1"
        )
    cls.check_world(cfg, procs)


class TrainLog:
    """``train_log.csv``: one row per logged step; on resume, rows past the checkpoint are dropped."""

    FIXED = ["step", "seconds", "lr"]

    def __init__(self, path: Path, keep_until: int):
        self.path, self.columns = path, None
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self.columns = reader.fieldnames
                rows = [r for r in reader if int(r["step"]) <= keep_until]
            with files.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, self.columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.columns is None:
            self.columns = (
                self.FIXED + [k for k in row if k not in self.FIXED and k != "val_accuracy"] + ["val_accuracy"]
            )
            with open(self.path, "w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, self.columns, lineterminator="\n").writeheader()
        elif new := [k for k in row if k not in self.columns]:  # scalars first logged later (diagnostics)
            with open(self.path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            self.columns = self.columns[:-1] + new + self.columns[-1:]
            with files.atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, self.columns, restval="", lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, self.columns, extrasaction="ignore", restval="", lineterminator="\n").writerow(row)


def log_interval(log_every: int, steps: int) -> int:
    """Steps between logged rows: ``train.log_every``, or a tenth of the run where that would log fewer than
    two rows, so that a short run's curves have points to draw."""
    return log_every if steps >= 2 * log_every else max(1, steps // 10)


def training_progress(step: int, seconds: float, steps: int, budget_seconds: float) -> float:
    """How far training is, 0..1: by steps, or by time when a budget would end it sooner."""
    by_steps = step / steps if steps else 1.0
    return min(1.0, max(by_steps, seconds / budget_seconds if budget_seconds else 0.0))


def train(prepared: Prepared, run_dir: Path, seed: int, resume: bool, show_progress: bool) -> dict:
    """The shared loop. Returns training facts for the record (steps, seconds, validation accuracy).
    On several processes each trains its share in lockstep; only process 0 writes or validates."""
    method, cfg, data, train_data = prepared.method, prepared.config, prepared.data, prepared.train_data
    device, tc, world = method.env.device, cfg.train, method.env.world
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
    log_every = log_interval(tc.log_every, tc.steps)
    val_accuracy = None
    bar = tqdm(
        total=tc.steps,
        initial=step,
        desc=f"{cfg.method_name} {cfg.benchmark}",
        unit="step",
        disable=not (show_progress and writes),
        mininterval=0.5 if sys.stderr.isatty() else 30,
        dynamic_ncols=True,
    )
    method.train()
    while not done and step < tc.steps and not (budget and seconds >= budget):
        started = time.perf_counter()
        progress = training_progress(step, seconds, tc.steps, budget)
        lr = optimization.schedule(progress)
        # diagnostics on the logged steps, never on the steps whose FLOPs are counted (they are not training)
        method.diagnose = ((step + 1) % log_every == 0 or step + 1 == tc.steps) and step not in watched
        with compute.counting(step in watched and step not in counts) as count:
            with optimization.autocast():
                outputs = method.training_step(train_data, step, progress, generator)
            metrics = optimization.step(outputs)
        if count.total:
            counts[step] = count.total * world.size  # equal shares
        step += 1
        logged = step % log_every == 0 or step == tc.steps
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
            bar.set_postfix(
                {k: f"{v:.4g}" for k, v in values.items() if k == "loss"}
                | ({"val": f"{val_accuracy:.3f}"} if val_accuracy is not None else {})
            )
        bar.update(1)
        if step % tc.checkpoint_every == 0 and writes:
            save_checkpoint(checkpoint, method, optimization, step, seconds, generator, done=False, flops=counts)
    bar.close()
    if data.val_episodes is not None and writes:
        val_accuracy = validation_accuracy(method, cfg, data)
    if writes:
        save_checkpoint(checkpoint, method, optimization, step, seconds, generator, done=True, flops=counts)
    return {
        "steps": step,
        "train_seconds": round(seconds, 3),
        "val_accuracy": val_accuracy,
        "budget_exhausted": bool(budget and seconds >= budget and step < tc.steps),
        "flops": compute.training_flops(prepared.setup_flops, starts, counts, step),
        **mechanisms.summary(run_dir / TRAIN_LOG, type(method), method.cfg, step),
    }


def validation_accuracy(method: Method, cfg: RunConfig, data: BenchmarkData) -> float:
    return evaluate(
        method, data.val.images, data.val_episodes, cfg.eval.head, cfg.eval.batch_size, **cfg.eval.head_settings()
    ).mean


def score(method: Method, cfg: RunConfig, data: BenchmarkData) -> EvalResult:
    """The fixed test episodes scored with ``cfg.eval`` (head, distance, batch size)."""
    return evaluate(
        method, data.test.images, data.test_episodes, cfg.eval.head, cfg.eval.batch_size, **cfg.eval.head_settings()
    )


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


def prepare(resolved: Resolved, seed: int, device: torch.device, world: World = SINGLE) -> Prepared:
    """Everything a run does before its first step, and so every check that needs data or the method, before
    any run directory exists: the FLOP budget's steps, the method, the data (holdout group, episodes against
    the classes and images there are) and the method's set-up (its training tasks against the data)."""
    check_memory(resolved, device)
    config = budgeted(resolved, seed, device)  # before the method: it re-seeds
    method = build_method(resolved, seed, device, world)
    data = resolved.benchmark.load(resolved.config, with_train=method.trains)
    train_data, setup_flops = None, 0
    if method.trains:
        train_data = training_data(method, data)
        with compute.counting() as setup:
            method.setup(train_data)
        setup_flops = setup.total
    return Prepared(config, method, data, train_data, setup_flops)


def check_memory(resolved: Resolved, device: torch.device) -> None:
    """A ConfigError, naming the settings, where the images or episodes a run holds in memory need more
    than this machine has (the least they need: every class at its smallest size)."""
    cfg, spec, dataset = resolved.config, resolved.benchmark.spec, resolved.benchmark.dataset
    per_image = dataset.channels * cfg.data.image_size**2
    images = sum(
        (info.classes or 0) * (info.per_class or 0)
        for split, info in dataset.splits.items()
        if split in spec.splits.values()
    )
    images = max(images, cfg.bench.ways * (cfg.bench.shots + cfg.bench.queries))
    episodes = (
        8 * (cfg.bench.episodes + cfg.train.val_episodes) * cfg.bench.ways * (cfg.bench.shots + cfg.bench.queries)
    )
    available = provenance.memory_bytes()
    for need, what, keys in (
        (images * per_image, f"{images:,} images of {cfg.data.image_size}² px", "data.image_size"),
        (
            episodes,
            f"the indices of {cfg.bench.episodes:,} test and {cfg.train.val_episodes:,} validation episodes",
            "bench.episodes or train.val_episodes",
        ),
    ):
        if need > available:
            raise ConfigError(
                f"{keys.split(' or ')[0]}: {what} need at least {need / 2**30:,.1f} GiB of memory, and "
                f"this machine has {available / 2**30:,.1f} GiB; lower {keys}"
            )


def execute(request: RunRequest) -> dict:
    """Run (or resume) ``request`` into its run directory; returns the final record.

    The seed, the device, the directory and every check that needs data or the method (``prepare``) come
    before the directory is made; it is locked for the whole run (``rundir.locked``). A failure is recorded
    (``rundir.fail_record``) and re-raised. On several processes (``request.world``), process 0 does all of
    this and the others only train their shares (``follow``)."""
    run_dir, world = Path(request.run_dir), request.world
    check_seed(request.seed)
    torch_device = resolve_device(request.device)
    set_threads(request.threads)
    if not world.is_main:
        return follow(request, torch_device)
    existing = rundir.check_target(run_dir, request.resume)
    if existing and existing.get("status") == "ok":
        return existing  # read_record adds run_dir
    prepared = prepare(request.resolved, request.seed, torch_device, world)
    with rundir.locked(run_dir):
        resume = request.resume and (run_dir / CHECKPOINT).is_file()
        if resume:
            read_checkpoint(run_dir / CHECKPOINT, fix=RESUME_FIX, mmap=True)
        return _execute_locked(request, prepared, torch_device, resume)


def follow(request: RunRequest, torch_device: torch.device) -> dict:
    """Process 1.. of a run: the collectives of process 0's ``_execute_locked`` in the same order, training
    its share of every step (resuming from process 0's checkpoint), writing nothing."""
    rundir.process_devices(torch_device, request.world)
    prepared = prepare(request.resolved, request.seed, torch_device, request.world)
    return {"rank": request.world.rank, **train(prepared, Path(request.run_dir), request.seed, request.resume, False)}


def _execute_locked(request: RunRequest, prepared: Prepared, torch_device: torch.device, resume: bool) -> dict:
    resolved, seed, run_dir = request.resolved, request.seed, Path(request.run_dir)
    record = rundir.base_record(resolved, seed, run_dir, torch_device, request.world)
    finish = lambda final: loggers.finish(run_dir, resolved.config.log, final)  # noqa: E731
    with rundir.lifecycle(run_dir, stored_form(resolved.config), record, torch_device, finish):
        method, data = prepared.method, prepared.data
        if method.trains:
            record.update(train(prepared, run_dir, seed, resume, request.progress))
            if prepared.config.train.budget_flops:
                record["flops"]["budget"] = prepared.config.train.budget_flops
        else:
            record.update(steps=0, train_seconds=0.0, val_accuracy=None, flops=compute.training_flops(0, [], {}, 0))
        if resolved.config.eval.test:
            with compute.counting() as evaluation:
                result = score(method, resolved.config, data)
            record["flops"]["eval"] = evaluation.total
            write_scores(run_dir, result.accuracies, result.correct)
            record.update(result_fields(result, data.test_episodes.digest))
    return {**record, "run_dir": str(run_dir)}


def execute_processes(procs: int, request: RunRequest) -> dict:
    """``execute`` as ``procs`` processes on this machine (``harness run --procs``); process 0's record."""
    from harness.distributed import launch

    run_dir = Path(request.run_dir)
    try:
        launch(procs, request.device, execute_as, request)
    except HarnessError as exc:  # a process died: process 0 may not have recorded why
        rundir.mark_dead(run_dir, str(exc))
        raise HarnessError(
            f"{exc}; the run is recorded failed in {run_dir}; continue it from its last checkpoint "
            f"with --run-dir {run_dir} --resume"
        ) from None
    record = read_record(run_dir)
    if not record or record.get("status") != "ok":
        raise HarnessError(
            f"the {procs}-process run in {run_dir} did not finish: "
            f"{(record or {}).get('reason') or 'no record was written'}"
        )
    return record


def execute_as(world: World, request: RunRequest) -> None:
    """One process's part of a run (the target ``launch`` and SLURM tasks call)."""
    execute(replace(request, world=world))
