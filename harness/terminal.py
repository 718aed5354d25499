"""Tables for the terminal: ``fitted`` renders a table with tabulate, wrapping its long columns so that
it fits the output's width: ``$COLUMNS`` where set, else the terminal's when stdout is one (output to a
file or a pipe is not wrapped)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

MIN_WIDTH = 16  # a wrapped column keeps at least this many characters a line (where dropping columns can)


def terminal_width() -> int | None:
    """The width to fit: ``$COLUMNS``, else the terminal's where stdout is one; None: no limit."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"]) or None
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def fitted(
    rows: Sequence[Sequence],
    headers: Sequence[str],
    wrap: Sequence[str],
    drop: Sequence[str] = (),
    width: int | None = None,
    **options,
) -> str:
    """``tabulate(rows, headers, **options)`` fitted to ``width`` (default ``terminal_width()``; None: as
    wide as it is): the columns named in ``wrap`` are wrapped over several lines as far as needed, and
    where that would leave them narrower than MIN_WIDTH, the columns named in ``drop`` are left out, in
    that order, first. ``options`` may give ``floatfmt`` per column (a list)."""
    from tabulate import tabulate

    headers, rows = list(headers), [list(row) for row in rows]
    width = width or terminal_width()
    table = tabulate(rows, headers=headers, **options)
    if not width or not rows or widest(table) <= width:
        return table
    for count in range(len(drop) + 1):
        kept = [i for i, name in enumerate(headers) if name not in drop[:count]]
        narrow = {
            **options,
            **(
                {"floatfmt": [options["floatfmt"][i] for i in kept]}
                if isinstance(options.get("floatfmt"), list)
                else {}
            ),
        }
        table, cap = wrapped([[row[i] for i in kept] for row in rows], [headers[i] for i in kept], wrap, width, narrow)
        if widest(table) <= width and cap >= MIN_WIDTH:
            break
    return table


def wrapped(rows: list[list], headers: list[str], wrap: Sequence[str], width: int, options: dict) -> tuple[str, int]:
    """The table with its ``wrap`` columns wrapped to share what ``width`` leaves them, narrow columns kept
    whole first; and the narrowest line length a wrapped column got (``width`` where none had to wrap)."""
    from tabulate import tabulate

    natural = {
        i: max(len(headers[i]), *(len(str(row[i])) for row in rows)) for i, name in enumerate(headers) if name in wrap
    }
    table = tabulate(rows, headers=headers, **options)
    budget = width - (widest(table) - sum(natural.values()))
    limits: list[int | None] = [None] * len(headers)
    narrowest = width
    for count, i in enumerate(sorted(natural, key=natural.get)):
        share = max(budget // (len(natural) - count), len(headers[i]), 1)
        limits[i] = min(natural[i], share)
        budget -= limits[i]
        narrowest = min(narrowest, limits[i]) if limits[i] < natural[i] else narrowest
    if narrowest == width:
        return table, width
    return tabulate(rows, headers=headers, maxcolwidths=limits, **options), narrowest


def widest(table: str) -> int:
    return max(map(len, table.splitlines()), default=0)
