"""Paper tables: a ``TableSpec`` filled from the store, ranked per column, as Markdown, LaTeX or CSV."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.report.render import (
    MISSING,
    PROTOCOL_MARK,
    duplicates_note,
    format_seconds,
    format_steps,
    percent,
    plus_minus,
    protocol_note,
)
from harness.report.selection import (
    RunGroup,
    Store,
    check_same_episodes,
    commit_of,
    describe,
    differing_settings,
    protocol_changes,
    run_id,
    short_reason,
)
from harness.report.spec import TableSpec, merge_where
from harness.report.spec_fields import Column, Row
from harness.report.stats import TEST_NAMES, Standing, rank_groups
from harness.store import newest_key


@dataclass
class Cell:
    """A measured cell: the row's group in the column and its standing; group None: no ok run."""

    group: RunGroup | None
    standing: Standing | None = None


@dataclass
class PaperTable:
    """A table spec filled from the store."""

    spec: TableSpec
    cells: list[list[Cell]]  # [row][column]
    excluded: list[tuple[Row, Column, dict]]  # failed or unfinished runs matching a cell
    superseded: list[dict]
    protocol_changes: list[dict]  # per column: the protocol settings its runs changed (marked; none: {})

    @property
    def records(self) -> list[dict]:
        return [r for row in self.cells for cell in row if cell.group for r in cell.group.runs]


def build_table(spec: TableSpec, store: Store) -> PaperTable:
    """Fill every cell: the one matching group per row and column, ranked within the column. A table of
    no finished run is an error, except at a ladder rung (not made yet: every cell missing)."""
    cells = [[Cell(None) for _ in spec.columns] for _ in spec.rows]
    excluded, superseded, changes = [], [], []
    for j, column in enumerate(spec.columns):
        for i, row in enumerate(spec.rows):
            selection = store.select(column.benchmark, [row.method], column.head, merge_where(row, column, spec.path))
            if len(selection.groups) > 1:
                keys = differing_settings([g.settings for g in selection.groups])
                options = "; ".join(
                    f"{describe(g.settings, keys)} (config {g.config_hash[:8]})" for g in selection.groups
                )
                example = f", e.g. where: {{{keys[0]}: {selection.groups[0].settings.get(keys[0])!r}}}" if keys else ""
                raise HarnessError(
                    f"{spec.path}: row '{row.label}' matches {len(selection.groups)} configurations of {row.method} "
                    f"in column '{column.label}' ({column.benchmark}): {options}. Add a where filter to the row"
                    f"{example}"
                )
            if selection.groups:
                cells[i][j] = Cell(selection.groups[0])
            excluded += [(row, column, r) for r in selection.excluded]
            superseded += selection.superseded
        present = [(i, cells[i][j].group) for i in range(len(spec.rows)) if cells[i][j].group]
        for i, group in present:
            group.label = spec.rows[i].label
        check_same_episodes([g for _, g in present], f"{spec.path}: column '{column.label}' ({column.benchmark})")
        for (i, _), standing in zip(present, rank_groups([g for _, g in present], spec.test, spec.alpha)):
            cells[i][j].standing = standing
        changes.append(protocol_changes([g for _, g in present]))
    if spec.multiple == 1 and not any(cell.group for row in cells for cell in row):
        raise HarnessError(
            f"{spec.path}: no finished run for any cell under {store.describe()}; make them "
            "(harness reproduce / harness run) or point --runs-dir at the runs directory that has them"
        )
    return PaperTable(spec, cells, excluded, sorted(superseded, key=newest_key), changes)


def without_rungs(store: Store, table: PaperTable, rungs: list[PaperTable]) -> Store:
    """``store`` less the runs only a ladder rung uses: a spec's leaderboards and plots are of rung 1."""
    kept = {r["run_dir"] for r in table.records}
    return store.without({r["run_dir"] for rung in rungs for r in rung.records} - kept)


SI_PREFIXES = {0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


def column_label(table: PaperTable, j: int) -> str:
    """A column's label, marked where its runs changed the benchmark's protocol."""
    return table.spec.columns[j].label + (PROTOCOL_MARK if table.protocol_changes[j] else "")


def cell_where(spec: TableSpec, row: Row, column: Column) -> str:
    """How the notes name a cell: its row, and its column where the table has several."""
    return row.label if len(spec.columns) == 1 else f"{row.label} ({column.label})"


def measured_cells(table: PaperTable) -> list[tuple[Row, Column, RunGroup]]:
    spec = table.spec
    return [
        (row, column, cell.group)
        for row, cells in zip(spec.rows, table.cells)
        for column, cell in zip(spec.columns, cells)
        if cell.group
    ]


def trains(group: RunGroup) -> bool:
    return any(r.get("steps") for r in group.runs)


def cells_note(table: PaperTable) -> str:
    """What a cell is, said once: the metric, the seeds most cells have (and the cells with other counts),
    what its ± is."""
    spec, cells = table.spec, measured_cells(table)
    counts = Counter(len(group.runs) for _, _, group in cells)
    common = max(counts, key=lambda n: (counts[n], n))

    def runs(n: int, seeds: set[tuple]) -> str:
        if n == 1:
            return "one run ± 95% CI over the episodes"
        listed = f" ({', '.join(map(str, next(iter(seeds))))})" if len(seeds) == 1 else ""
        return f"mean over {n} seeds{listed} ± 95% CI across seeds (1.96·sd/√{n})"

    text = f"Cells: {spec.metric} (%) on the test episodes, " + runs(
        common, {tuple(g.seeds) for _, _, g in cells if len(g.runs) == common}
    )
    for n in sorted(set(counts) - {common}, reverse=True):
        odd = [(row, column, group) for row, column, group in cells if len(group.runs) == n]
        untrained = ", which do not train" if not any(trains(group) for _, _, group in odd) else ""
        text += (
            "; "
            + ", ".join(cell_where(spec, row, column) for row, column, _ in odd)
            + untrained
            + f": {runs(n, {tuple(g.seeds) for _, _, g in odd})}"
        )
    return text + "."


def marks_note(spec: TableSpec) -> str:
    return (
        "Bold: best in its column; underlined: not significantly worse than the best "
        f"({TEST_NAMES[spec.test]}, Holm-corrected, α = {spec.alpha:g})."
    )


def table_notes(table: PaperTable, fmt: str) -> list[str]:
    """The notes printed under a table, each fact once (LaTeX lists run ids in comments instead)."""
    spec = table.spec
    notes = [cells_note(table), marks_note(spec)] if measured_cells(table) else [marks_note(spec)]
    if any(cell.group is None for row in table.cells for cell in row):
        notes.append(f"{MISSING}: no finished run.")
    short, budget = [], []
    for row, column, group in measured_cells(table):
        if len(group.runs) < len(row.seeds or spec.seeds) and trains(group):
            short.append(f"{cell_where(spec, row, column)}: seeds {', '.join(map(str, group.seeds))}")
        if any(r.get("budget_exhausted") for r in group.runs):
            budget.append(cell_where(spec, row, column))
    if short:
        notes.append("Fewer seeds than planned: " + "; ".join(short) + ".")
    if budget:
        notes.append(
            "Stopped by a wall-clock budget (train.budget_minutes), so not exactly reproducible: "
            + ", ".join(budget)
            + "."
        )
    changed = {column.label: changes for column, changes in zip(spec.columns, table.protocol_changes) if changes}
    if changed:
        notes.append(protocol_note(changed))
    notes += spec.notes
    if table.excluded:
        if fmt == "latex":
            notes.append(f"{len(table.excluded)} failed or unfinished run(s) excluded (listed in the comments above).")
        else:
            notes.append(
                "Excluded (not ok): "
                + "; ".join(
                    f"{row.label} ({column.label}): {run_id(r)} ({r.get('status')}: {short_reason(r)})"
                    for row, column, r in table.excluded
                )
                + "."
            )
    if table.superseded and fmt != "latex":
        notes.append(duplicates_note(table.superseded))
    return notes


def table_cell_text(cell: Cell, spec: TableSpec) -> str:
    if cell.group is None:
        return MISSING
    return plus_minus(percent(cell.group.accuracy, spec.metric), 100 * cell.group.ci95, spec.decimals)


def training_columns(table: PaperTable) -> dict[str, tuple[str, Callable[[RunGroup, Row], str]]]:
    """The spec's training columns: name → (header, the text of a row's group). FLOPs are in one unit for
    the whole column (T for 10^12, ...), its largest value 1 to 999 of it."""
    flops = [g.train_flops for _, _, g in measured_cells(table) if g.train_flops]
    power = min(18, 3 * math.floor(math.log10(max(flops)) / 3)) if flops else 0
    decimals = max(0, 2 - math.floor(math.log10(max(flops) / 10**power))) if flops else 0  # 3 digits of the largest

    def flops_text(group: RunGroup, row: Row) -> str:
        value = group.train_flops
        return MISSING if value is None else "0" if value == 0 else f"{value / 10**power:.{decimals}f}"

    def share_text(group: RunGroup, row: Row) -> str:
        if not row.paper_steps:
            return "not stated" if trains(group) else MISSING
        return f"{100 * statistics.mean(group.steps) / row.paper_steps:.2g}%"

    known = {
        "steps": ("Steps", lambda g, row: format_steps(g.steps)),
        "flops": (f"Train {SI_PREFIXES[power]}FLOPs", flops_text),
        "seconds": ("Train time", lambda g, row: format_seconds(g.train_seconds)),
        "paper_share": ("Share of paper's training", share_text),
    }
    return {name: known[name] for name in table.spec.training_columns}


def training_cells(table: PaperTable, row: Row, cells: list[Cell]) -> list[str]:
    """A row's training columns: the value its cells share, else each column's, ``a / b`` (none measured: —)."""
    out = []
    for _, text in training_columns(table).values():
        values = [text(cell.group, row) if cell.group else MISSING for cell in cells]
        measured = {v for v, cell in zip(values, cells) if cell.group}
        out.append(measured.pop() if len(measured) == 1 else " / ".join(values) if measured else MISSING)
    return out


def deltas(table: PaperTable) -> list[tuple[Row, Column, float]]:
    """Reproduced minus reported, in points of the metric, for each measured cell of a row that names the
    reference it reproduces (``reported:``) where that reference has a value."""
    spec, out = table.spec, []
    references = {ref.label: ref for ref in spec.references}
    for row, cells in zip(spec.rows, table.cells):
        if not row.reported:
            continue
        for column, cell in zip(spec.columns, cells):
            reported = references[row.reported].values.get(column.label)
            if cell.group and reported is not None:
                out.append((row, column, percent(cell.group.accuracy, spec.metric) - reported))
    return out


def quoted(value: float | None, decimals: int) -> str:
    """A published number with the table's decimals, or more where the spec gives more (8.0, 4.35)."""
    if value is None:
        return MISSING
    given = repr(float(value)).partition(".")[2]
    return f"{value:.{max(decimals, len(given))}f}"


def table_frame(table: PaperTable):
    """The table as a DataFrame (its CSV): one line per measured, missing, quoted or excluded cell; numbers
    in percent of the metric."""
    import pandas as pd

    spec = table.spec
    lines = []
    for row, cells in zip(spec.rows, table.cells):
        for column, cell, changes in zip(spec.columns, cells, table.protocol_changes):
            group, standing = cell.group, cell.standing
            line = {
                "row": row.label,
                "block": row.block,
                "column": column.label,
                "benchmark": column.benchmark,
                "kind": "measured" if group else "missing",
                "method": row.method,
                "metric": spec.metric,
                "value_pct": None,
                "ci95_pct": None,
                "mark": "",
                "rank": None,
                "p_vs_best_holm": None,
                "seeds": "",
                "episodes": None,
                "steps": "",
                "train_flops": None,
                "train_seconds": None,
                "citation": "",
                "runs": "",
                "commits": "",
                "note": "",
            }
            if group:
                line.update(
                    value_pct=round(percent(group.accuracy, spec.metric), 4),
                    ci95_pct=round(100 * group.ci95, 4),
                    mark=standing.mark,
                    rank=standing.rank,
                    p_vs_best_holm=None if standing.p_vs_best is None else round(standing.p_vs_best, 6),
                    seeds=" ".join(map(str, group.seeds)),
                    episodes=group.episodes,
                    steps=" ".join(map(str, group.steps)),
                    train_flops=group.train_flops,
                    train_seconds=None if group.train_seconds is None else round(group.train_seconds, 3),
                    runs=" ".join(run_id(r) for r in group.runs),
                    commits=" ".join(commit_of(r) for r in group.runs),
                    note="protocol changed: "
                    + ", ".join(f"{k}={own} (benchmark: {theirs})" for k, (own, theirs) in changes.items())
                    if changes
                    else "",
                )
            lines.append(line)
    for row, column, record in table.excluded:
        lines.append(
            {
                "row": row.label,
                "column": column.label,
                "benchmark": column.benchmark,
                "kind": "excluded",
                "method": row.method,
                "metric": spec.metric,
                "runs": run_id(record),
                "commits": commit_of(record),
                "note": f"{record.get('status')}: {short_reason(record)}",
            }
        )
    for row, column, delta in deltas(table):
        lines.append(
            {
                "row": row.label,
                "block": row.block,
                "column": column.label,
                "benchmark": column.benchmark,
                "kind": "delta",
                "method": row.method,
                "metric": spec.metric,
                "value_pct": round(delta, 4),
                "citation": next(ref.citation for ref in spec.references if ref.label == row.reported),
                "note": f"reproduced minus reported ({row.reported}), in points",
            }
        )
    for ref in spec.references:
        for column in spec.columns:
            if column.label in ref.values:
                lines.append(
                    {
                        "row": ref.label,
                        "column": column.label,
                        "benchmark": column.benchmark,
                        "kind": "quoted",
                        "metric": spec.metric,
                        "value_pct": ref.values[column.label],
                        "citation": ref.citation,
                        "note": "quoted, not measured",
                    }
                )
    columns = [
        "row",
        "block",
        "column",
        "benchmark",
        "kind",
        "method",
        "metric",
        "value_pct",
        "ci95_pct",
        "mark",
        "rank",
        "p_vs_best_holm",
        "seeds",
        "episodes",
        "steps",
        "train_flops",
        "train_seconds",
        "citation",
        "runs",
        "commits",
        "note",
    ]
    frame = pd.DataFrame(lines, columns=columns)
    frame["rank"] = frame["rank"].astype("Int64")
    frame["episodes"] = frame["episodes"].astype("Int64")
    return frame
