"""``harness compare SPEC A B``: two rows of a paper table compared at every rung of its budget ladder, on the
same test episodes (paired tests), with each cell's steps and training FLOPs, so that a claim "A beats B" can
be read as a function of compute."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.report.spec import TableSpec, load_spec, rung_specs
from harness.report.stats import paired_test
from harness.report.tables import PaperTable, build_table


def comparisons(spec: TableSpec, tables: list[PaperTable], a: str, b: str) -> list[dict]:
    """One dict per rung and column where both rows have runs: each row's error (%), seeds, steps and training
    FLOPs, and the paired Wilcoxon test of per-episode accuracies (averaged over each row's seeds)."""
    labels = [row.label for row in spec.rows]
    for label in (a, b):
        if label not in labels:
            raise ConfigError(f"{spec.path}: no row labelled {label!r}; its rows: {', '.join(labels)}")
    out = []
    for table in tables:
        rows = {row.label: cells for row, cells in zip(table.spec.rows, table.cells)}
        for j, column in enumerate(table.spec.columns):
            if a not in rows or b not in rows:
                continue
            group_a, group_b = rows[a][j].group, rows[b][j].group
            if group_a is None or group_b is None:
                continue
            test = paired_test(group_a.per_episode, group_b.per_episode, "wilcoxon")
            out.append(
                {
                    "rung": table.spec.multiple,
                    "column": column.label,
                    **{
                        f"{side} {what}": value
                        for side, group in (("A", group_a), ("B", group_b))
                        for what, value in (
                            ("error %", round(100 * (1 - group.accuracy), 2)),
                            ("seeds", ",".join(map(str, group.seeds))),
                            ("steps", "/".join(map(str, group.steps))),
                            ("TFLOPs", round(group.train_flops / 1e12, 2) if group.train_flops else None),
                        )
                    },
                    "A better (episodes)": test.a_better,
                    "B better (episodes)": test.b_better,
                    "Wilcoxon p": float(f"{test.p_value:.3g}"),
                }
            )
    return out


def cmd_compare(args) -> int:
    from tabulate import tabulate

    from harness.report.commands import table_store

    spec = load_spec(Path(args.spec))
    store = table_store(spec, args.runs_dir, None)
    tables = [build_table(spec, store), *(build_table(rung, store) for rung in rung_specs(spec))]
    rows = comparisons(spec, tables, args.a, args.b)
    if not rows:
        print(f"no rung of {spec.path} has runs of both {args.a} and {args.b}")
        return 0
    print(
        f"A = {args.a}, B = {args.b} ({spec.path}; error in %, lower is better; two-sided Wilcoxon signed-rank "
        "test on the same test episodes, per-episode accuracies averaged over each row's seeds)"
    )
    print(tabulate(rows, headers="keys", tablefmt="github" if args.format == "md" else "simple"))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="two rows of a table spec at every rung of its budget ladder: errors, steps, FLOPs, paired tests",
        description="Compare row A with row B of a paper table at every rung of its ladder (rung 1 and each "
        "multiple), column by column: each row's error, seeds, steps and training FLOPs, and the two-sided "
        "Wilcoxon signed-rank test of their per-episode accuracies on the same test episodes.",
    )
    p.add_argument("spec", help="the table spec (YAML)")
    p.add_argument("a", help="row A's label")
    p.add_argument("b", help="row B's label")
    p.add_argument("--runs-dir", help="read this result store instead of the spec's committed evidence")
    p.add_argument("--format", choices=["text", "md"], default="text", help="text (default) or a Markdown table")
    p.set_defaults(handler=cmd_compare)
