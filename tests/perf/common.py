"""Shared by the benchmark scripts: timing and the JSON line every script prints."""

from __future__ import annotations

import json
import time


def timed(step, steps: int, warmup: int = 3) -> float:
    """Calls per second of ``step(i)`` over ``steps`` calls, after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps / (time.perf_counter() - started)


def report(name: str, steps_per_s: float, ref: float | None, limit: float) -> dict:
    """Print one line: steps/s, the reference's and the compute-only limit's, and the two ratios."""
    line = {"method": name, "steps_per_s": round(steps_per_s, 3)}
    if ref is not None:
        line.update(ref_steps_per_s=round(ref, 3))
    line.update(limit_steps_per_s=round(limit, 3))
    if ref is not None:
        line.update(ratio=round(steps_per_s / ref, 3))
    line.update(of_limit=round(steps_per_s / limit, 3))
    print(json.dumps(line), flush=True)
    return line


def training_step(name: str, bench: str):
    """``step(i)``: one of ``name``'s training steps with its preset on ``bench``, as the runner makes it
    (method, training data, setup, the runner's optimisation), on the CPU."""
    import torch

    from harness.optim import Optimization
    from harness.resolve import resolve
    from harness.runner import build_method, training_data

    resolved = resolve(name, bench)
    method = build_method(resolved, 0, torch.device("cpu"))
    train = training_data(method, resolved.benchmark.load(resolved.config, with_train=True))
    method.setup(train)
    optimization = Optimization(method.parameter_groups(), resolved.config.train, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    return lambda i: optimization.step(method.training_step(train, i, 0.0, generator))
