"""Paper tables: a ``TableSpec`` filled from the store, ranked per column, as Markdown, LaTeX or CSV."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.report.render import (MISSING, csv_text, duplicates_note, interval_note, latex_escape, latex_tabular,
                                   mark_latex, mark_markdown, markdown_table, percent, plus_minus, ranking_note,
                                   source_lines)
from harness.report.selection import (RunGroup, Store, check_same_episodes, commit_of, describe, differing_settings,
                                      run_id, short_reason)
from harness.report.spec import Column, Row, TableSpec, merge_where
from harness.report.stats import Standing, rank_groups
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

    @property
    def records(self) -> list[dict]:
        return [r for row in self.cells for cell in row if cell.group for r in cell.group.runs]


def build_table(spec: TableSpec, store: Store) -> PaperTable:
    """Fill every cell: the one matching group per row and column, ranked within the column. A table of
    no finished run is an error, except at a ladder rung (not made yet: every cell missing)."""
    cells = [[Cell(None) for _ in spec.columns] for _ in spec.rows]
    excluded, superseded = [], []
    for j, column in enumerate(spec.columns):
        for i, row in enumerate(spec.rows):
            selection = store.select(column.benchmark, [row.method], column.head, merge_where(row, column, spec.path))
            if len(selection.groups) > 1:
                keys = differing_settings([g.settings for g in selection.groups])
                options = "; ".join(f"{describe(g.settings, keys)} (config {g.config_hash[:8]})" for g in selection.groups)
                example = f", e.g. where: {{{keys[0]}: {selection.groups[0].settings.get(keys[0])!r}}}" if keys else ""
                raise HarnessError(
                    f"{spec.path}: row '{row.label}' matches {len(selection.groups)} configurations of {row.method} "
                    f"in column '{column.label}' ({column.benchmark}): {options}. Add a where filter to the row"
                    f"{example}")
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
    if spec.multiple == 1 and not any(cell.group for row in cells for cell in row):
        raise HarnessError(f"{spec.path}: no finished run for any cell under {store.describe()}; make them "
                           "(harness reproduce / harness run) or point --runs-dir at the runs directory that has them")
    return PaperTable(spec, cells, excluded, sorted(superseded, key=newest_key))


def without_rungs(store: Store, table: PaperTable, rungs: list[PaperTable]) -> Store:
    """``store`` less the runs only a ladder rung uses: a spec's leaderboards and plots are of rung 1."""
    kept = {r["run_dir"] for r in table.records}
    return store.without({r["run_dir"] for rung in rungs for r in rung.records} - kept)


def training_notes(table: PaperTable) -> list[str]:
    """How the learned cells were trained: steps and time per run, seeds short of the spec's,
    and runs stopped by a wall-clock budget (not exactly reproducible)."""
    spec, trained, short, budget = table.spec, [], [], []
    for row, cells in zip(spec.rows, table.cells):
        for column, cell in zip(spec.columns, cells):
            runs = cell.group.runs if cell.group else []
            if not runs or not any(r.get("steps") for r in runs):
                continue
            where = row.label if len(spec.columns) == 1 else f"{row.label} ({column.label})"
            steps = sorted({int(r.get("steps") or 0) for r in runs})
            seconds = statistics.fmean(float(r.get("train_seconds") or 0) for r in runs)
            trained.append(f"{where} {'/'.join(map(str, steps))} steps, {seconds:.0f} s")
            if len(runs) < len(row.seeds or spec.seeds):
                short.append(f"{where}: seeds {', '.join(map(str, cell.group.seeds))}")
            if any(r.get("budget_exhausted") for r in runs):
                budget.append(where)
    notes = []
    if trained:
        notes.append("Training per run (steps; mean training seconds over seeds): " + "; ".join(trained) + ".")
    if short:
        notes.append("Fewer seeds than planned: " + "; ".join(short) + ".")
    if budget:
        notes.append("Stopped by a wall-clock budget (train.budget_minutes), so not exactly reproducible: "
                     + ", ".join(budget) + ".")
    return notes


def table_notes(table: PaperTable, fmt: str) -> list[str]:
    """The notes printed under a table (LaTeX lists run ids in comments instead)."""
    spec = table.spec
    notes = [f"Cells: {spec.metric} (%) on the test episodes. " + interval_note(),
             "Bold: best measured result in its column; underlined: not significantly worse than the best. "
             + ranking_note(spec.test, spec.alpha)]
    if any(cell.group is None for row in table.cells for cell in row):
        notes.append(f"{MISSING}: no finished run.")
    several = [f"{row.label} ({column.label}): {len(cell.group.runs)}"
               for row, cells in zip(spec.rows, table.cells) for column, cell in zip(spec.columns, cells)
               if cell.group and len(cell.group.runs) > 1]
    if several:
        notes.append("Seeds per cell, where more than one: " + ", ".join(several) + ".")
    notes += training_notes(table)
    if spec.references:
        notes.append("Published results are quoted from the cited papers, not measured here, and are not ranked.")
    notes += spec.notes
    if table.excluded:
        if fmt == "latex":
            notes.append(f"{len(table.excluded)} failed or unfinished run(s) excluded (listed in the comments above).")
        else:
            notes.append("Excluded (not ok): " + "; ".join(
                f"{row.label} ({column.label}): {run_id(r)} ({r.get('status')}: {short_reason(r)})"
                for row, column, r in table.excluded) + ".")
    if table.superseded and fmt != "latex":
        notes.append(duplicates_note(table.superseded))
    return notes


def table_cell_text(cell: Cell, spec: TableSpec) -> str:
    if cell.group is None:
        return MISSING
    return plus_minus(percent(cell.group.accuracy, spec.metric), 100 * cell.group.ci95, spec.decimals)


def quoted(value: float | None, decimals: int) -> str:
    """A published number with the table's decimals, or more where the spec gives more (8.0, 4.35)."""
    if value is None:
        return MISSING
    given = repr(float(value)).partition(".")[2]
    return f"{value:.{max(decimals, len(given))}f}"
QUOTED_HEADING = "Published results (quoted, not measured)"


def render_table(table: PaperTable, fmt: str, made_by: str) -> str:
    """A paper table as Markdown, LaTeX (booktabs) or CSV (one line per cell)."""
    if fmt == "csv":
        return csv_text(table_frame(table))
    return table_markdown(table, made_by) if fmt == "md" else table_latex(table, made_by)


def measured_rows(table: PaperTable, fmt: str) -> list[list[str]]:
    """The measured rows' cells as Markdown or LaTeX (escaped, best bold, ties underlined), each block of
    rows under a heading row."""
    escape, mark = (latex_escape, mark_latex) if fmt == "latex" else (str, mark_markdown)
    out, block = [], ""
    for row, cells in zip(table.spec.rows, table.cells):
        if row.block and row.block != block:
            rule = r"\midrule" if out else ""
            heading = rf"{rule}\multicolumn{{{len(cells) + 1}}}{{l}}{{\emph{{{escape(row.block)}}}}}"
            out.append([heading] if fmt == "latex" else [f"*{row.block}*", *[""] * len(cells)])
        block = row.block
        out.append([escape(row.label), *(mark(escape(table_cell_text(cell, table.spec)),
                                              cell.standing.mark if cell.standing else "") for cell in cells)])
    return out


def table_markdown(table: PaperTable, made_by: str) -> str:
    spec = table.spec
    labels, align = [c.label for c in spec.columns], ["right"] * len(spec.columns)
    out = [f"<!-- Made by {made_by}; regenerate, do not edit. -->", "", f"## {spec.title}", "",
           markdown_table(["Method", *labels], measured_rows(table, "md"), ["left", *align]), ""]
    if spec.references:
        ref_rows = [[ref.label, ref.citation, *(quoted(ref.values.get(c.label), spec.decimals) for c in spec.columns)]
                    for ref in spec.references]
        out += [f"**{QUOTED_HEADING}**", "",
                markdown_table(["Reference", "Source", *labels], ref_rows, ["left", "left", *align]), ""]
    out += ["Notes:", ""] + [f"- {note}" for note in table_notes(table, "md")]
    out += ["", "Source runs (run id, harness commit): "
            + (", ".join(f"`{rid}` ({commit})" for rid, commit in source_lines(table.records)) or "none") + ".", ""]
    return "\n".join(out)


def table_latex(table: PaperTable, made_by: str) -> str:
    spec = table.spec
    out = [f"% Made by {made_by}; regenerate, do not edit. Needs \\usepackage{{booktabs}}.",
           "% Source runs (run id, harness commit):"]
    out += [f"%   {rid} {commit}" for rid, commit in source_lines(table.records)] or ["%   none"]
    if table.excluded:
        out += ["% Excluded failed or unfinished runs (row, column, run id, reason):"]
        out += [f"%   {row.label} | {column.label} | {run_id(r)} | {short_reason(r)}" for row, column, r in table.excluded]
    if table.superseded:
        out += ["% " + duplicates_note(table.superseded)]
    blocks = []
    if spec.references:
        blocks.append((latex_escape(QUOTED_HEADING), [
            [latex_escape(ref.label) + (rf"~\cite{{{ref.bibkey}}}" if ref.bibkey else f" ({latex_escape(ref.citation)})"),
             *(latex_escape(quoted(ref.values.get(c.label), spec.decimals)) for c in spec.columns)]
            for ref in spec.references]))
    out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{spec.caption or latex_escape(spec.title)}}}",
            rf"\label{{tab:{spec.path.stem}}}"]
    out += latex_tabular(["Method", *(latex_escape(c.label) for c in spec.columns)], measured_rows(table, "latex"),
                         "l" + "c" * len(spec.columns), blocks)
    out += [r"\par\smallskip\footnotesize", " ".join(latex_escape(n) for n in table_notes(table, "latex")),
            r"\end{table}", ""]
    return "\n".join(out)


def table_frame(table: PaperTable):
    """The table as a DataFrame (its CSV): one line per measured, missing, quoted or excluded cell; numbers
    in percent of the metric."""
    import pandas as pd

    spec = table.spec
    lines = []
    for row, cells in zip(spec.rows, table.cells):
        for column, cell in zip(spec.columns, cells):
            group, standing = cell.group, cell.standing
            line = {"row": row.label, "block": row.block, "column": column.label, "benchmark": column.benchmark,
                    "kind": "measured" if group else "missing", "method": row.method, "metric": spec.metric,
                    "value_pct": None, "ci95_pct": None, "mark": "", "rank": None, "p_vs_best_holm": None,
                    "seeds": "", "episodes": None, "citation": "", "runs": "", "commits": "", "note": ""}
            if group:
                line.update(value_pct=round(percent(group.accuracy, spec.metric), 4), ci95_pct=round(100 * group.ci95, 4),
                            mark=standing.mark, rank=standing.rank,
                            p_vs_best_holm=None if standing.p_vs_best is None else round(standing.p_vs_best, 6),
                            seeds=" ".join(map(str, group.seeds)), episodes=group.episodes,
                            runs=" ".join(run_id(r) for r in group.runs), commits=" ".join(commit_of(r) for r in group.runs))
            lines.append(line)
    for row, column, record in table.excluded:
        lines.append({"row": row.label, "column": column.label, "benchmark": column.benchmark, "kind": "excluded",
                      "method": row.method, "metric": spec.metric, "runs": run_id(record), "commits": commit_of(record),
                      "note": f"{record.get('status')}: {short_reason(record)}"})
    for ref in spec.references:
        for column in spec.columns:
            if column.label in ref.values:
                lines.append({"row": ref.label, "column": column.label, "benchmark": column.benchmark, "kind": "quoted",
                              "metric": spec.metric, "value_pct": ref.values[column.label], "citation": ref.citation,
                              "note": "quoted, not measured"})
    columns = ["row", "block", "column", "benchmark", "kind", "method", "metric", "value_pct", "ci95_pct", "mark", "rank",
               "p_vs_best_holm", "seeds", "episodes", "citation", "runs", "commits", "note"]
    frame = pd.DataFrame(lines, columns=columns)
    frame["rank"] = frame["rank"].astype("Int64")
    frame["episodes"] = frame["episodes"].astype("Int64")
    return frame
