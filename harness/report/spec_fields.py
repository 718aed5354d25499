"""The checks every part of a table spec's YAML goes through: mappings with known keys, lists of names,
and paths that stay beside the spec's folder; and a spec's plain ``Column`` and ``Row`` records."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.report.render import FORMATS


@dataclass(frozen=True)
class Column:
    label: str
    benchmark: str  # the benchmark's name
    head: str | None
    where: dict
    source: str = ""  # its benchmark file, where it has one


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    where: dict
    block: str = ""  # the group of rows it is printed under (e.g. "self-supervised")
    seeds: tuple[int, ...] | None = None  # its training seeds where not the spec's (its own, or a ladder rung's)
    paper_steps: int | None = None  # the training steps of the paper it reproduces (the paper_share column)
    reported: str = ""  # the reference row (label) it reproduces: the table's delta block


def check_keys(mapping: Any, allowed: set[str], required: set[str], context: str) -> dict:
    """``mapping`` as a dict with only ``allowed`` keys and all ``required`` ones, or a ConfigError."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{context} must be a mapping with keys {', '.join(sorted(allowed))}, got {mapping!r}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{context}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(mapping))
    if missing:
        raise ConfigError(f"{context}: missing key(s) {', '.join(missing)}")
    return mapping


def check_list(value: Any, context: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{context} must be a non-empty list")
    return value


def spec_path(base: Path, value: Any, context: str) -> Path:
    """A path a spec names, relative to its folder ``base``: it must stay inside ``base``'s parent (the
    results folder beside the spec's folder: ../runs, ../plots, ...); absolute paths are refused."""
    text = str(value)
    path = Path(os.path.normpath(base / text))
    if Path(text).is_absolute() or not path.resolve().is_relative_to(base.resolve().parent):
        raise ConfigError(
            f"{context}: {text[:200]!r} lies outside {base.resolve().parent}; a spec writes only under "
            "the folder that holds its own folder, with relative paths (e.g. ../plots/x)"
        )
    return path


def check_outputs(value: Any, context: str, base: Path) -> dict[str, Path]:
    """``{format: path}`` with paths relative to ``base`` (the spec's folder), normalised (``spec_path``)."""
    outputs = check_keys(value, set(FORMATS), set(), context)
    return {fmt: spec_path(base, path, f"{context}: {fmt}") for fmt, path in outputs.items()}


def check_row_labels(chosen: list[str], labels: list[str], context: str) -> None:
    """Each of ``chosen`` must be one of the table's row ``labels``: else one error with the closest."""
    for label in chosen:
        if label not in labels:
            close = difflib.get_close_matches(label, labels, n=1)
            raise ConfigError(
                f"{context}: no row labelled {label!r}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f". Rows: {', '.join(labels)}"
            )


def names(value: Any, context: str) -> list[str] | None:
    """A list of names from a YAML list or a comma-separated string (None when absent)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"{context} must be a list of names, got {value!r}")
    return [i.strip() for i in items]
