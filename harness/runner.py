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
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness import files, provenance
from harness.data import get_dataset
from harness.errors import ConfigError, HarnessError, RunFailed
from harness.evaluation import EvalResult, evaluate
from harness.method import Method, MethodEnv, TrainData
from harness.protocol import BenchmarkData, load_benchmark
from harness.resolve import Resolved
from harness.results import (
    CHECKPOINT, ERROR_LOG, TRAIN_LOG, read_record, write_config, write_record, write_scores,
)


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


def build_method(resolved: Resolved, seed: int, device: torch.device) -> Method:
    """The method, initialised from ``seed`` and moved to ``device``."""
    cfg = resolved.config
    dataset = get_dataset(resolved.spec.dataset)
    env = MethodEnv(dataset.channels, cfg.data.image_size, dataset.mean, dataset.std, device, cfg.train, cfg)
    seed_everything(seed)
    return resolved.method_class(cfg.method, env).to(device)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_record(resolved: Resolved, seed: int, run_dir: Path, device: torch.device) -> dict:
    cfg = resolved.config
    return {
        "run_id": run_dir.name,
        "kind": "train",
        "method": cfg.method_name,
        "benchmark": cfg.benchmark,
        "trained_on": cfg.benchmark,
        "seed": seed,
        "config_hash": cfg.hash(),
        "head": cfg.eval.head,
        "distance": cfg.eval.distance,
        "status": "running",
        "reason": None,
        "started": now(),
        "device": provenance.device_name(device),
        "threads": torch.get_num_threads(),
        "platform": provenance.platform_name(),
        "host": provenance.host(),
        "command": provenance.command_line(),
        "versions": provenance.versions(),
        "git": provenance.git_state(),
    }


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


def lr_factor(schedule: str, progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0


def save_checkpoint(path: Path, method: Method, step: int, seconds: float, generator: torch.Generator,
                    done: bool) -> None:
    state = {
        "step": step,
        "train_seconds": seconds,
        "done": done,
        "model": method.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in method.optimizers().items()},
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    files.torch_save(state, path)


def load_checkpoint(path: Path, method: Method, generator: torch.Generator) -> dict:
    state = torch.load(path, map_location=method.env.device, weights_only=False)
    method.load_state_dict(state["model"])
    for name, opt in method.optimizers().items():
        opt.load_state_dict(state["optimizers"][name])
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return state


def train(method: Method, data: BenchmarkData, run_dir: Path, seed: int, resume: bool, show_progress: bool) -> dict:
    """The shared loop. Returns training facts for the record (steps, seconds, validation accuracy)."""
    cfg, device = method.env.run, method.env.device
    tc = cfg.train
    uses_labels = method.uses_labels
    train_data = TrainData(
        images=data.train.images.to(device),
        labels=data.train.labels.to(device) if uses_labels else None,
        num_classes=data.train.num_classes if uses_labels else None,
    )
    method.setup(train_data)
    generator = torch.Generator().manual_seed(seed)
    for opt in method.optimizers().values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    checkpoint = run_dir / CHECKPOINT
    step, seconds, done = 0, 0.0, False
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, method, generator)
        step, seconds, done = state["step"], state["train_seconds"], state["done"]
    log = TrainLog(run_dir / TRAIN_LOG, keep_until=step)
    budget = tc.budget_minutes * 60
    val_accuracy = None
    bar = tqdm(total=tc.steps, initial=step, desc=f"{cfg.method_name} {cfg.benchmark}", unit="step",
               disable=not show_progress, mininterval=0.5 if sys.stderr.isatty() else 30, dynamic_ncols=True)
    method.train()
    while not done and step < tc.steps and not (budget and seconds >= budget):
        started = time.perf_counter()
        method.progress = training_progress(step, seconds, tc.steps, budget)
        factor = lr_factor(tc.schedule, method.progress)
        for opt in method.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
        metrics = method.training_step(train_data, step, generator)
        step += 1
        logged = step % tc.log_every == 0 or step == tc.steps
        validate = data.val_episodes is not None and tc.val_every and step % tc.val_every == 0
        if logged or validate:
            values = {k: float(v) for k, v in metrics.items()}
            if not all(math.isfinite(v) for v in values.values()):
                bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
                raise RunFailed(f"training diverged at step {step}: {bad}; lower train.lr or check the inputs")
        seconds += time.perf_counter() - started  # training time only: validation is not charged to the budget
        if logged or validate:
            row = {"step": step, "seconds": round(seconds, 3), "lr": tc.lr * factor, **values}
            if validate:
                val_accuracy = validation_accuracy(method, data)
                row["val_accuracy"] = val_accuracy
                method.train()
            log.write(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k == "loss"} |
                            ({"val": f"{val_accuracy:.3f}"} if val_accuracy is not None else {}))
        bar.update(1)
        if step % tc.checkpoint_every == 0:
            save_checkpoint(checkpoint, method, step, seconds, generator, done=False)
    bar.close()
    if data.val_episodes is not None:
        val_accuracy = validation_accuracy(method, data)
    save_checkpoint(checkpoint, method, step, seconds, generator, done=True)
    return {"steps": step, "train_seconds": round(seconds, 3), "val_accuracy": val_accuracy,
            "budget_exhausted": bool(budget and seconds >= budget and step < tc.steps)}


def validation_accuracy(method: Method, data: BenchmarkData) -> float:
    cfg = method.env.run
    result = evaluate(method, data.val.images, data.val_episodes, cfg.eval.head, cfg.eval.distance, cfg.eval.batch_size)
    return result.mean


def score(method: Method, data: BenchmarkData, head: str) -> EvalResult:
    cfg = method.env.run
    return evaluate(method, data.test.images, data.test_episodes, head, cfg.eval.distance, cfg.eval.batch_size)


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


def execute(resolved: Resolved, seed: int, run_dir: Path, device: str = "auto", resume: bool = False,
            progress: bool = True) -> dict:
    """Run (or resume) one configuration with one seed into ``run_dir``; returns the final record."""
    run_dir = Path(run_dir)
    existing = read_record(run_dir)
    if existing and not resume:
        raise HarnessError(f"{run_dir} already holds a run ({existing['status']}); pass --resume to continue it")
    if existing and existing.get("status") == "ok":
        return existing  # read_record adds run_dir
    torch_device = resolve_device(device)
    limit_threads()
    record = base_record(resolved, seed, run_dir, torch_device)
    wall_started = time.perf_counter()
    write_config(run_dir, resolved.config.to_dict())
    write_record(run_dir, record)
    try:
        method = build_method(resolved, seed, torch_device)
        data = load_benchmark(resolved.spec, resolved.config, with_train=method.trains)
        if method.trains:
            record.update(train(method, data, run_dir, seed, resume, progress))
        else:
            record.update(steps=0, train_seconds=0.0, val_accuracy=None)
        if resolved.config.eval.test:
            result = score(method, data, resolved.config.eval.head)
            write_scores(run_dir, result.accuracies, result.correct)
            record.update(result_fields(result, data.test_episodes.digest))
        record.update(status="ok", finished=now(), wall_seconds=round(time.perf_counter() - wall_started, 3),
                      peak_memory_mb=round(provenance.peak_memory_mb(torch_device), 1))
    except (Exception, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        record.update(status="failed", reason=reason, finished=now())
        files.write_text(run_dir / ERROR_LOG, traceback.format_exc())
        write_record(run_dir, record)
        raise
    write_record(run_dir, record)
    return {**record, "run_dir": str(run_dir)}
