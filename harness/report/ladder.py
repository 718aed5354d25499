"""Budget ladders of a table spec: rungs that multiply the learned rows' step caps, each rung its own
table (``harness.report.spec.rung_specs``) with its own runs and outputs (``<stem>-x<multiple>``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import parse_seeds
from harness.errors import ConfigError
from harness.report.spec_fields import Row, check_keys, check_row_labels, names


@dataclass(frozen=True)
class Rung:
    """A ladder rung: the rows' step caps times ``multiple``, for ``rows`` (labels) with ``seeds``."""

    multiple: int
    seeds: tuple[int, ...]
    rows: tuple[str, ...]


MAX_MULTIPLE = 1000


def load_ladder(value: Any, rows: list[Row], seeds: list[int], path: Path) -> list[Rung]:
    labels = [row.label for row in rows]
    rungs = []
    for i, item in enumerate(value or []):
        context = f"{path}: ladder[{i}]"
        item = check_keys(item, {"multiple", "seeds", "rows"}, {"multiple"}, context)
        multiple = item["multiple"]
        if not isinstance(multiple, int) or isinstance(multiple, bool) or not 2 <= multiple <= MAX_MULTIPLE:
            raise ConfigError(
                f"{context}: multiple must be an integer from 2 to {MAX_MULTIPLE} (rung 1 is the table "
                f"itself), got {multiple!r}"
            )
        chosen = names(item.get("rows"), f"{context}: rows") or [r.label for r in rows if step_keys(r)]
        check_row_labels(chosen, labels, f"{context}: rows")
        for label in chosen:
            if not step_keys(rows[labels.index(label)]):
                raise ConfigError(
                    f"{context}: row {label!r} sets no train.steps (or train.budget_flops) in its where, so it "
                    "has no step cap to multiply; give it one, or leave it out of the rung"
                )
        rungs.append(Rung(multiple, tuple(parse_seeds(item.get("seeds", seeds))), tuple(chosen)))
    return rungs


# The settings that set how long a row trains, multiplied at each rung: the step cap (or the FLOP budget that
# buys the steps) and CACTUs' embedding phase. Other ``*_steps`` settings (inner-loop, target and test-time
# adaptation steps) shape one step and stay.
TRAINING_LENGTH_KEYS = ("train.steps", "train.budget_flops", "method.encoder_steps")


def step_keys(row: Row) -> list[str]:
    """The training-length settings (``TRAINING_LENGTH_KEYS``) of a learned row's filter."""
    if "train.steps" not in row.where and "train.budget_flops" not in row.where:
        return []
    return [key for key in TRAINING_LENGTH_KEYS if key in row.where]
