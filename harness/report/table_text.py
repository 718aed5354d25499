"""A paper table as text: Markdown, LaTeX (booktabs) or CSV (``render_table``)."""

from __future__ import annotations

from harness.report.render import (
    MISSING,
    csv_text,
    duplicates_note,
    latex_escape,
    latex_tabular,
    mark_latex,
    mark_markdown,
    markdown_table,
    source_lines,
)
from harness.report.selection import run_id, short_reason
from harness.report.tables import (
    PaperTable,
    column_label,
    deltas,
    quoted,
    table_cell_text,
    table_frame,
    table_notes,
    training_cells,
    training_columns,
)

QUOTED_HEADING = "Published results (quoted, not measured, not ranked)"
DELTA_HEADING = "Reproduced minus reported (points)"


def delta_rows(table: PaperTable) -> list[list[str]]:
    """One line per row that names the reference it reproduces: its difference from it in every column."""
    spec, found = table.spec, {(row.label, column.label): delta for row, column, delta in deltas(table)}
    return [
        [
            f"{row.label} vs {row.reported}",
            *(
                f"{found[row.label, column.label]:+.{spec.decimals}f}"
                if (row.label, column.label) in found
                else MISSING
                for column in spec.columns
            ),
        ]
        for row in spec.rows
        if row.reported
    ]


def render_table(table: PaperTable, fmt: str, made_by: str) -> str:
    """A paper table as Markdown, LaTeX (booktabs) or CSV (one line per cell)."""
    if fmt == "csv":
        return csv_text(table_frame(table))
    return table_markdown(table, made_by) if fmt == "md" else table_latex(table, made_by)


def headers(table: PaperTable) -> list[str]:
    """Method, the columns (marked where the protocol changed), the training columns."""
    return [
        "Method",
        *(column_label(table, j) for j in range(len(table.spec.columns))),
        *(header for header, _ in training_columns(table).values()),
    ]


def measured_rows(table: PaperTable, fmt: str) -> list[list[str]]:
    """The measured rows' cells as Markdown or LaTeX (escaped, best bold, ties underlined), each block of
    rows under a heading row."""
    escape, mark = (latex_escape, mark_latex) if fmt == "latex" else (str, mark_markdown)
    width = len(headers(table))
    out, block = [], ""
    for row, cells in zip(table.spec.rows, table.cells):
        if row.block and row.block != block:
            rule = r"\midrule" if out else ""
            heading = rf"{rule}\multicolumn{{{width}}}{{l}}{{\emph{{{escape(row.block)}}}}}"
            out.append([heading] if fmt == "latex" else [f"*{row.block}*", *[""] * (width - 1)])
        block = row.block
        out.append(
            [
                escape(row.label),
                *(
                    mark(escape(table_cell_text(cell, table.spec)), cell.standing.mark if cell.standing else "")
                    for cell in cells
                ),
                *map(escape, training_cells(table, row, cells)),
            ]
        )
    return out


def table_markdown(table: PaperTable, made_by: str) -> str:
    spec = table.spec
    labels, align = headers(table)[1:], ["right"] * (len(headers(table)) - 1)
    out = [
        f"<!-- Made by {made_by}; regenerate, do not edit. -->",
        "",
        f"## {spec.title}",
        "",
        markdown_table(["Method", *labels], measured_rows(table, "md"), ["left", *align]),
        "",
    ]
    if spec.references:
        ref_rows = [
            [ref.label, ref.citation, *(quoted(ref.values.get(c.label), spec.decimals) for c in spec.columns)]
            for ref in spec.references
        ]
        out += [
            f"**{QUOTED_HEADING}**",
            "",
            markdown_table(
                ["Reference", "Source", *labels[: len(spec.columns)]],
                ref_rows,
                ["left", "left", *align[: len(spec.columns)]],
            ),
            "",
        ]
    if any(row.reported for row in spec.rows):
        out += [
            f"**{DELTA_HEADING}**",
            "",
            markdown_table(
                ["Row vs reference", *labels[: len(spec.columns)]],
                delta_rows(table),
                ["left", *align[: len(spec.columns)]],
            ),
            "",
        ]
    out += ["Notes:", ""] + [f"- {note}" for note in table_notes(table, "md")]
    out += [
        "",
        "Source runs (run id, harness commit): "
        + (", ".join(f"`{rid}` ({commit})" for rid, commit in source_lines(table.records)) or "none")
        + ".",
        "",
    ]
    return "\n".join(out)


def stacked(header: str, align: str) -> str:
    """A long LaTeX column header in two lines (split at the space nearest its middle), so that the
    column is as wide as its numbers."""
    spaces = [i for i, c in enumerate(header) if c == " " and "$" not in header[:i]]
    if len(header) <= 8 or not spaces:
        return header
    cut = min(spaces, key=lambda i: abs(2 * i - len(header)))
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{header[:cut]}\\{header[cut + 1 :]}\end{{tabular}}"


def table_latex(table: PaperTable, made_by: str) -> str:
    """A ``table`` float that compiles in a plain ``article`` with ``booktabs``; its citations' entries are
    in the spec's .bib (``spec.bib_path``), named in the header comment."""
    spec = table.spec
    needs = "Needs \\usepackage{booktabs}" + (
        f"; cites entries of {spec.bib_path.name} (written beside it)" if spec.bibkeys and spec.bib_path else ""
    )
    out = [f"% Made by {made_by}; regenerate, do not edit. {needs}.", "% Source runs (run id, harness commit):"]
    out += [f"%   {rid} {commit}" for rid, commit in source_lines(table.records)] or ["%   none"]
    if table.excluded:
        out += ["% Excluded failed or unfinished runs (row, column, run id, reason):"]
        out += [
            f"%   {row.label} | {column.label} | {run_id(r)} | {short_reason(r)}" for row, column, r in table.excluded
        ]
    if table.superseded:
        out += ["% " + duplicates_note(table.superseded)]
    blocks, padding = [], [""] * len(spec.training_columns)
    if spec.references:
        blocks.append(
            (
                latex_escape(QUOTED_HEADING),
                [
                    [
                        latex_escape(ref.label)
                        + (rf"~\cite{{{ref.bibkey}}}" if ref.bibkey else f" ({latex_escape(ref.citation)})"),
                        *(latex_escape(quoted(ref.values.get(c.label), spec.decimals)) for c in spec.columns),
                        *padding,
                    ]
                    for ref in spec.references
                ],
            )
        )
    if any(row.reported for row in spec.rows):
        blocks.append(
            (latex_escape(DELTA_HEADING), [[*map(latex_escape, line), *padding] for line in delta_rows(table)])
        )
    align = "l" + "c" * len(spec.columns) + "r" * len(spec.training_columns)
    out += [
        r"\begin{table}[t]",
        r"\centering",
        f"\\{spec.latex_size}",
        rf"\caption{{{spec.caption or latex_escape(spec.title)}}}",
        rf"\label{{tab:{spec.path.stem}{f'-x{spec.multiple}' if spec.multiple > 1 else ''}}}",
    ]
    out += latex_tabular(
        [stacked(latex_escape(h), a) for h, a in zip(headers(table), align)],
        measured_rows(table, "latex"),
        align,
        blocks,
    )
    out += [
        r"\par\smallskip",
        r"\begin{minipage}{\linewidth}\footnotesize",
        " ".join(latex_escape(n) for n in table_notes(table, "latex")),
        r"\end{minipage}",
        r"\end{table}",
        "",
    ]
    return "\n".join(out)
