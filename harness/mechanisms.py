"""Whether a method's mechanisms did anything in a run: the medians, over the second half of its training, of
the scalars it logs to measure them (``Method.mechanisms``; BMSSL's first-level gain, its target's distance
from the learner, the two terms' gradient ratio), and a warning for each below the floor the method declares
for the run's settings (``Method.mechanism_floors``). The record keeps both (``mechanisms``, ``warnings``);
``harness run``, ``harness results`` and the site's run pages show them."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path


def second_half_medians(train_log: Path, names: tuple[str, ...], steps: int) -> dict[str, float]:
    """Each scalar of ``names`` logged in ``train_log`` → its median over the rows past half of ``steps``
    (scalars never logged there are left out)."""
    try:
        with open(train_log, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.DictReader(fh) if int(row["step"]) > steps / 2]
    except OSError:
        return {}
    medians = {}
    for name in names:
        values = [float(row[name]) for row in rows if row.get(name) not in (None, "")]
        if values:
            medians[name] = statistics.median(values)
    return medians


def warnings(medians: dict[str, float], floors: dict[str, float]) -> list[str]:
    """One line per mechanism whose median is below its floor."""
    return [
        f"{name} has a median of {medians[name]:.3g} over the second half of training, below {floor:g}: "
        f"the mechanism it measures does (almost) nothing under these settings"
        for name, floor in floors.items()
        if name in medians and medians[name] < floor
    ]


def summary(train_log: Path, method_class: type, cfg, steps: int) -> dict:
    """The record's ``mechanisms`` and ``warnings`` for a run of ``method_class`` ({} for a method that
    declares no mechanism scalars)."""
    if not method_class.mechanisms:
        return {}
    medians = second_half_medians(train_log, method_class.mechanisms, steps)
    return {"mechanisms": medians, "warnings": warnings(medians, method_class.mechanism_floors(cfg))}


def lines(record: dict) -> list[str]:
    """The record's mechanism medians and warnings as text (none for a method without mechanism scalars)."""
    medians = record.get("mechanisms") or {}
    out = []
    if medians:
        out.append(
            "mechanisms (medians over the second half): " + ", ".join(f"{k} {v:.3g}" for k, v in medians.items())
        )
    return out + [f"warning: {text}" for text in record.get("warnings") or []]
