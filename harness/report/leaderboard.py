"""Leaderboards: one ranked table per benchmark of every configuration with ok runs."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.report.render import (
    PROTOCOL_MARK,
    csv_text,
    duplicates_note,
    format_flops,
    format_memory,
    format_p,
    format_seconds,
    format_steps,
    interval_note,
    latex_escape,
    latex_tabular,
    mark_latex,
    mark_markdown,
    markdown_table,
    plus_minus,
    protocol_note,
    ranking_note,
    source_lines,
)
from harness.report.selection import (
    RunGroup,
    Selection,
    Store,
    check_same_episodes,
    commit_of,
    protocol_changes,
    run_id,
    short_reason,
)
from harness.report.stats import Standing, rank_groups


@dataclass
class Board:
    """The leaderboard of one benchmark: groups best first, with their standings."""

    selection: Selection
    groups: list[RunGroup]
    standings: list[Standing]
    protocol_changes: dict  # setting → (the runs' value, the benchmark's): a changed protocol (marked)

    @property
    def records(self) -> list[dict]:
        return [r for g in self.groups for r in g.runs]

    @property
    def title(self) -> str:
        """The benchmark's name, marked when its runs changed the benchmark's protocol."""
        return self.selection.benchmark + (PROTOCOL_MARK if self.protocol_changes else "")


def build_boards(
    store: Store, benchmarks: list[str] | None, head: str | None, test: str, alpha: float, where: dict | None = None
) -> list[Board]:
    """One board per benchmark (all benchmarks with ok runs when none are named), of the runs matching ``where``."""
    available = store.benchmarks()
    boards = []
    for benchmark in benchmarks or available:
        selection = store.select(benchmark, head=head, where=where)
        if not selection.groups:
            raise HarnessError(
                f"no finished runs on '{benchmark}'"
                + (f" with head '{head}'" if head else "")
                + (f" matching {where}" if where else "")
                + " under "
                f"{store.describe()}. Benchmarks with finished runs there: {', '.join(available) or '(none)'}. "
                "Check --bench and --runs-dir, or make runs with `harness run`"
            )
        check_same_episodes(selection.groups, f"leaderboard {benchmark}")
        standings = rank_groups(selection.groups, test, alpha)
        order = sorted(
            range(len(standings)),
            key=lambda i: (standings[i].rank, -selection.groups[i].accuracy, selection.groups[i].label),
        )
        boards.append(
            Board(
                selection,
                [selection.groups[i] for i in order],
                [standings[i] for i in order],
                protocol_changes(selection.groups),
            )
        )
    if not boards:
        raise HarnessError(
            f"no finished runs under {store.describe()}; make some with `harness run` or pass --runs-dir"
        )
    return boards


LEADERBOARD_HEADERS = [
    "Rank",
    "Method",
    "Accuracy (%)",
    "Episodes",
    "Seeds",
    "Steps",
    "Train FLOPs",
    "p vs best",
    "Train time",
    "Peak memory",
    "Device",
]


def board_cells(board: Board, fmt: str, decimals: int = 2) -> list[list[str]]:
    """The leaderboard's cells as Markdown or LaTeX (escaped, best bold, ties underlined)."""
    escape, mark = (latex_escape, mark_latex) if fmt == "latex" else (str, mark_markdown)
    rows = []
    for group, standing in zip(board.groups, board.standings):
        accuracy = mark(escape(plus_minus(100 * group.accuracy, 100 * group.ci95, decimals)), standing.mark)
        rows.append(
            [
                str(standing.rank),
                escape(group.label),
                accuracy,
                str(group.episodes),
                str(len(group.runs)),
                escape(format_steps(group.steps)),
                escape(format_flops(group.train_flops)),
                escape(format_p(standing.p_vs_best)),
                escape(format_seconds(group.train_seconds)),
                escape(format_memory(group.peak_memory_mb)),
                escape(group.devices),
            ]
        )
    return rows


def board_notes(board: Board, test: str, alpha: float) -> list[str]:
    notes = [interval_note(), ranking_note(test, alpha) + " p vs best: Holm-adjusted."]
    methods = [g.method for g in board.groups]
    several = sorted({m for m in methods if methods.count(m) > 1})
    if several:
        notes.append(
            f"{', '.join(several)}: several configurations, each its own entry, labelled [setting=value] by "
            "the settings that differ between them."
        )
    notes.append(
        "Steps: training steps of each run. Train FLOPs: training FLOPs counted as executed (a record's "
        "flops.train), mean over seeds; —: a run made before they were counted (harness flops RUN adds them)."
    )
    if board.protocol_changes:
        notes.append(protocol_note({board.selection.benchmark: board.protocol_changes}))
    if board.selection.excluded:
        notes.append(
            "Excluded (not ok): "
            + "; ".join(f"{run_id(r)} ({r.get('status')}: {short_reason(r)})" for r in board.selection.excluded)
            + "."
        )
    if board.selection.superseded:
        notes.append(duplicates_note(board.selection.superseded))
    return notes


def render_leaderboard(boards: list[Board], fmt: str, made_by: str, test: str, alpha: float) -> str:
    """The boards as one Markdown, LaTeX (booktabs) or CSV document."""
    if fmt == "csv":
        return csv_text(leaderboard_frame(boards))
    if fmt == "md":
        out = [
            f"<!-- Made by {made_by}; the source runs are listed under each table. Regenerate, do not edit. -->",
            "",
            "# Leaderboard",
            "",
        ]
        for board in boards:
            out += [
                f"## {board.title}",
                "",
                markdown_table(
                    LEADERBOARD_HEADERS,
                    board_cells(board, "md"),
                    ["right", "left", *["right"] * (len(LEADERBOARD_HEADERS) - 3), "left"],
                ),
                "",
            ]
            out += [f"- {note}" for note in board_notes(board, test, alpha)]
            out += [
                "- Source runs (run id, harness commit): "
                + ", ".join(f"`{rid}` ({commit})" for rid, commit in source_lines(board.records))
                + ".",
                "",
            ]
        return "\n".join(out)
    out = [f"% Made by {made_by}; regenerate, do not edit. Needs \\usepackage{{booktabs}}."]
    for board in boards:
        out += [f"% Source runs of {board.selection.benchmark} (run id, harness commit):"]
        out += [f"%   {rid} {commit}" for rid, commit in source_lines(board.records)]
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{Leaderboard: {latex_escape(board.title)}}}"]
        out += latex_tabular(
            [latex_escape(h) for h in LEADERBOARD_HEADERS],
            board_cells(board, "latex"),
            "rl" + "r" * (len(LEADERBOARD_HEADERS) - 3) + "l",
        )
        out += [
            r"\par\smallskip\footnotesize",
            " ".join(latex_escape(n) for n in board_notes(board, test, alpha)),
            r"\end{table}",
            "",
        ]
    return "\n".join(out)


def leaderboard_frame(boards: list[Board]):
    """The boards as a DataFrame (their CSV): one line per group and benchmark; numbers in percent, with the
    runs and commits."""
    import pandas as pd

    rows = []
    for board in boards:
        for group, standing in zip(board.groups, board.standings):
            rows.append(
                {
                    "benchmark": board.selection.benchmark,
                    "rank": standing.rank,
                    "label": group.label,
                    "method": group.method,
                    "config_hash": group.config_hash,
                    "mark": standing.mark,
                    "accuracy_pct": round(100 * group.accuracy, 4),
                    "ci95_pct": round(100 * group.ci95, 4),
                    "episodes": group.episodes,
                    "seeds": " ".join(map(str, group.seeds)),
                    "steps": " ".join(map(str, group.steps)),
                    "train_flops": group.train_flops,
                    "p_vs_best_holm": None if standing.p_vs_best is None else round(standing.p_vs_best, 6),
                    "train_seconds": group.train_seconds,
                    "peak_memory_mb": group.peak_memory_mb,
                    "device": group.devices,
                    "episode_digest": group.runs[0].get("episode_digest"),
                    "runs": " ".join(run_id(r) for r in group.runs),
                    "commits": " ".join(commit_of(r) for r in group.runs),
                    "protocol_changes": "; ".join(
                        f"{k}={own} (benchmark: {theirs})" for k, (own, theirs) in board.protocol_changes.items()
                    ),
                }
            )
    return pd.DataFrame(rows)
