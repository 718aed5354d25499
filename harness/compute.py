"""Compute accounting: the FLOPs a run spends, counted as executed with torch's
``torch.utils.flop_counter.FlopCounterMode``, and the step count a FLOP budget buys.

A run's record keeps ``flops``: ``step`` (one training step: forward, backward, inner-loop adaptation,
target networks, tensor augmentations, on every process together), ``setup`` (a method's work before its
first step, e.g. CACTUs' embedding and clustering), ``train`` (setup + steps × step), ``eval`` (scoring
the test episodes) and ``counted`` (how). The counter counts matrix products, convolutions and attention
(2 FLOPs per multiply-add), not elementwise work, so a step's FLOPs depend only on shapes: every step of
a method costs the same, and counting one real step counts them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

COUNTED = (
    "torch.utils.flop_counter.FlopCounterMode on the first two training steps of each phase as executed (all "
    "processes), "
    "its setup and its test scoring: matrix products, convolutions and attention, forward and backward; "
    "elementwise work is not counted"
)


class Count:
    """FLOPs counted inside ``counting()`` (``total``, after the block)."""

    total: int = 0


class Totals:
    """In place of ``FlopCounterMode``'s module tracker: everything counts under "Global" only. The tracker
    hooks every module's outputs for backward, which kept each scored episode's graph alive (MAML's test
    adaptation over 150 episodes: 9.5 GB counted against 1.5 GB uncounted)."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


@contextmanager
def counting(active: bool = True) -> Iterator[Count]:
    """Count the FLOPs of the block (``active=False``: run it uncounted, ``total`` stays 0)."""
    count = Count()
    if not active:
        yield count
        return
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    mode.mod_tracker = Totals()
    with mode:
        yield count
    count.total = int(mode.get_total_flops())


def watched_steps(starts: list[int], steps: int) -> set[int]:
    """The steps counted: the first two of each phase (the first may do one-off work, e.g. clustering)."""
    return {p for start in starts for p in (start, start + 1) if p < steps}


def training_flops(setup: int, starts: list[int], counts: dict[int, int], steps: int) -> dict:
    """The record's ``flops`` (without ``eval``) from the counted steps: per phase (from its first step) the
    FLOPs of a step, those done once at its start, and the whole run's training total."""
    phases = []
    starts = [s for s in starts if s < steps]
    for i, start in enumerate(starts):
        length = (starts[i + 1] if i + 1 < len(starts) else steps) - start
        first = counts[start]
        step = counts.get(start + 1, first) if length > 1 else first
        phases.append({"from_step": start, "steps": length, "step": step, "once": max(0, first - step)})
    train = setup + sum(p["once"] + p["step"] * p["steps"] for p in phases)
    return {
        "setup": setup,
        "step": phases[0]["step"] if phases else 0,
        "phases": phases,
        "train": train,
        "counted": COUNTED,
    }


def steps_for_budget(budget: float, setup: int, step: int) -> int:
    """The number of steps ``budget`` FLOPs buy after ``setup`` at ``step`` FLOPs each (at least one)."""
    from harness.errors import ConfigError

    if step <= 0:
        raise ConfigError(
            "train.budget_flops needs a method whose training step does counted work; this one "
            "counts 0 FLOPs per step: set train.steps instead"
        )
    steps = int((budget - setup) // step)
    if steps < 1:
        raise ConfigError(
            f"train.budget_flops={budget:.4g} buys no training step: the setup costs {setup:.4g} FLOPs "
            f"and one step {step:.4g}; raise it to at least {setup + step:.4g}"
        )
    return steps
