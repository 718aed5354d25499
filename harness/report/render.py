"""Text of the reports: numbers, marks and notes, Markdown (tabulate), LaTeX (booktabs) and CSV (pandas)."""

from __future__ import annotations

from pathlib import Path

from harness import files
from harness.report.selection import commit_of, run_id
from harness.report.stats import TEST_DESCRIPTIONS

FORMATS = ("md", "latex", "csv")
SUFFIXES = {"md": ".md", "latex": ".tex", "csv": ".csv"}
MISSING = "—"
PROTOCOL_MARK = "†"  # on a benchmark whose runs changed its protocol (``protocol_note``)


def percent(value: float, metric: str = "accuracy") -> float:
    """An accuracy (0..1) as percent of ``metric`` (accuracy or error)."""
    return 100 * (1 - value) if metric == "error" else 100 * value


def plus_minus(value: float, ci: float, decimals: int) -> str:
    return f"{value:.{decimals}f} ± {ci:.{decimals}f}"


def format_p(p: float | None) -> str:
    """A p-value for a table: three decimals, ``<0.001`` below that, blank for none."""
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def format_steps(steps: list[int]) -> str:
    """A group's training steps: one number, or the range where its seeds stopped at different steps."""
    if not steps:
        return MISSING
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"


def format_flops(flops: float | None) -> str:
    """FLOPs to three significant digits, ``4.46e12``; 0 for none spent."""
    if flops is None:
        return MISSING
    if flops == 0:
        return "0"
    mantissa, _, exponent = f"{flops:.2e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def format_memory(mb: float | None) -> str:
    return MISSING if mb is None else f"{mb:.0f} MB"


def mark_markdown(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "tie" else text


def mark_latex(text: str, mark: str) -> str:
    return rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}" if mark == "tie" else text


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "—": "---",
    "–": "--",
    "±": r"$\pm$",
    "×": r"$\times$",
    "α": r"$\alpha$",
    "≥": r"$\geq$",
    "√": r"$\surd$",
    "·": r"$\cdot$",
    "→": r"$\rightarrow$",
    "…": r"\ldots{}",
    "†": r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    """Text → LaTeX source that prints it (special characters escaped, a few symbols as math)."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def markdown_table(headers: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A pipe table via tabulate; cells are used as they are (no number parsing)."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def latex_tabular(
    headers: list[str], rows: list[list[str]], align: str, blocks: list[tuple[str, list[list[str]]]] = ()
) -> list[str]:
    """A booktabs tabular; ``rows`` are LaTeX already; each block adds a rule, a caption row and its rows."""
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    for caption, block_rows in blocks:
        lines += [r"\midrule", rf"\multicolumn{{{len(align)}}}{{l}}{{\emph{{{caption}}}}} \\"]
        lines += [" & ".join(row) + r" \\" for row in block_rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def csv_text(frame) -> str:
    """A DataFrame as CSV text with ``\\n`` line ends and no index."""
    return frame.to_csv(index=False, lineterminator="\n")


def source_lines(records: list[dict]) -> list[tuple[str, str]]:
    """(run id, commit) of each record, sorted by run id, without repeats."""
    return sorted({(run_id(r), commit_of(r)) for r in records})


def provenance_text(made_by: str, records: list[dict]) -> str:
    """One line for file metadata (plots): the command and the runs with their commits."""
    return f"{made_by}; runs: " + ", ".join(f"{rid} ({commit})" for rid, commit in source_lines(records))


def ranking_note(test: str, alpha: float) -> str:
    return (
        f"Rank 1 is shared by every row not significantly worse than the best on the same test episodes: "
        f"{TEST_DESCRIPTIONS[test]}, Holm-corrected over the comparisons with the best, α = {alpha:g}; "
        "lower ranks repeat this among the rows left."
    )


def interval_note() -> str:
    return (
        "± is the 95% confidence interval: over test episodes for one seed, across seeds "
        "(1.96·sd/√seeds) for several, where the number is the mean over seeds."
    )


def protocol_note(changed: dict[str, dict]) -> str:
    """The footnote of ``PROTOCOL_MARK``: per marked benchmark (or column), the protocol settings its runs
    changed (``selection.protocol_changes``)."""
    parts = [
        f"{name}: " + ", ".join(f"{key}={own} (the benchmark's {theirs})" for key, (own, theirs) in keys.items())
        for name, keys in changed.items()
        if keys
    ]
    return (
        f"{PROTOCOL_MARK} Scored with protocol settings changed from the benchmark's own, so not comparable "
        "with results on the benchmark as defined: " + "; ".join(parts) + "."
    )


def duplicates_note(superseded: list[dict]) -> str:
    return (
        "Of several ok runs of one configuration and seed the newest counts; ignored: "
        + ", ".join(run_id(r) for r in superseded)
        + "."
    )


def write_output(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path`` (a folder there is an error, not replaced)."""
    if Path(path).is_dir():
        from harness.errors import ConfigError

        raise ConfigError(f"{path} is a folder; give a file name to write, e.g. {Path(path) / 'leaderboard.md'}")
    files.write_text(path, text)
    return path
