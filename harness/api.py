"""The notebook API: ``import harness``, then ``harness.load_runs``, ``harness.leaderboard`` and
``harness.table``. Each calls the code of the command it mirrors (``harness results``, ``harness
leaderboard``, ``harness table``), so a notebook and the command line select, rank and format the same runs;
each returns a pandas DataFrame (or, with ``format=``, the text the command prints).

Example, from the repository's root, on the committed evidence (``tests/test_api.py`` runs it, and checks
that README.md shows the same block):

```python
import harness

# Every run with its record and settings as columns; where= keeps runs with these settings.
runs = harness.load_runs("results/runs/omniglot_lake", where={"head": "prototype"})
print(runs.groupby("method")["accuracy"].agg(["mean", "count"]).sort_values("mean"))

# harness leaderboard: one ranked row per configuration (accuracies in percent, ties by paired tests).
board = harness.leaderboard("results/runs/omniglot_lake")
print(board[["rank", "label", "accuracy_pct", "ci95_pct", "seeds"]].head())

# harness table: a spec's paper table, one row per cell; or the Markdown that `harness table` writes.
cells = harness.table("results/tables/omniglot_lake.yaml")
print(cells[cells.kind == "measured"].pivot(index="row", columns="column", values="value_pct"))
print(harness.table("results/tables/omniglot_lake.yaml", format="md"))
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def runs_dirs(path) -> list[Path]:
    """One runs directory or several (a list), each of which must exist."""
    from harness.errors import HarnessError

    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    for folder in paths:
        if not folder.is_dir():
            raise HarnessError(
                f"{folder}: no such runs directory; give the folder that holds the run directories "
                "(e.g. runs, or results/runs/omniglot_lake)"
            )
    return paths


def load_runs(path: str | Path | list = "runs", where: Mapping[str, Any] | None = None):
    """Every run under ``path`` (a runs directory, or a list of them) as a DataFrame, one row per run, oldest
    first: the columns of ``harness results`` (run, method, benchmark, seed, head, status, accuracy, ci95,
    episodes, steps, train_s, reason; accuracies are fractions), then the record's other plain fields
    (``config_hash``, ``val_accuracy``, ``finished``, ``device``, ``run_dir``, ...), then the run's settings
    flattened as ``group.key`` columns (``train.lr``, ``method.backbone``, ...; canonical form).

    ``where`` keeps the runs whose settings have these values, as a table spec's ``where:`` does
    (``{"data.train_fraction": 0.1, "head": "prototype"}``); a run without the setting is dropped."""
    import pandas as pd

    from harness.report.selection import Store, check_where, matches
    from harness.store import RunStore, records_frame

    where = check_where(dict(where) if where is not None else None, "load_runs")
    if where:
        from harness.methods import METHODS
        from harness.report.spec import check_where_keys

        check_where_keys(where, METHODS.names(), "load_runs")
    store = Store(RunStore(*runs_dirs(path)))  # as every report reads them: checked, settings indexed
    chosen = [(r, settings) for r in store.records for settings in [store.settings(r)] if matches(settings, where)]
    frame = records_frame([r for r, _ in chosen])
    plain = [{key: value for key, value in r.items() if not isinstance(value, (dict, list))} for r, _ in chosen]
    for extra in (pd.DataFrame(plain), pd.DataFrame([settings for _, settings in chosen])):
        new = [column for column in extra.columns if column not in frame.columns]
        frame = pd.concat([frame, extra[new]], axis=1)
    return frame


def leaderboard(
    path: str | Path | list = "runs",
    bench: str | list[str] | None = None,
    head: str | None = None,
    test: str = "wilcoxon",
    alpha: float | None = None,
    where: Mapping[str, Any] | None = None,
    format: str | None = None,
):
    """The leaderboards of ``harness leaderboard``: per benchmark (``bench``: one, a list, or None for every
    benchmark with ok runs), each configuration's seeds pooled, ranked with paired ``test`` ties at ``alpha``.
    Returns the DataFrame of ``--format csv`` (benchmark, rank, label, method, config_hash, mark,
    accuracy_pct, ci95_pct, ..., runs), or with ``format="md" | "latex" | "csv"`` the text. ``where`` keeps
    only the runs with these settings (as a spec's leaderboard ``where:``)."""
    from harness.report.leaderboard import build_boards, leaderboard_frame, render_leaderboard
    from harness.report.selection import Store, check_where
    from harness.report.stats import ALPHA, check_test
    from harness.store import RunStore

    alpha = ALPHA if alpha is None else alpha
    check_test(test, alpha, "harness.leaderboard")
    benchmarks = [bench] if isinstance(bench, str) else bench
    where = check_where(dict(where) if where is not None else None, "harness.leaderboard")
    boards = build_boards(Store(RunStore(*runs_dirs(path))), benchmarks, head, test, alpha, where)
    if format is None:
        return leaderboard_frame(boards)
    return render_leaderboard(boards, checked_format(format), "`harness.leaderboard(...)`", test, alpha)


def table(
    spec: str | Path,
    runs_dir: str | Path | None = None,
    collect_from: str | Path | None = None,
    format: str | None = None,
):
    """The paper table of a table spec, as ``harness table SPEC --format ...`` builds it: from the spec's
    committed evidence, or ``runs_dir`` instead, or ``collect_from`` together with the evidence. Returns the
    DataFrame of ``--format csv`` (one line per cell: row, column, value_pct, ci95_pct, mark, rank, ...; pivot it
    with ``frame.pivot(index="row", columns="column", values="value_pct")``), or with ``format="md" | "latex"
    | "csv"`` the text. Writes nothing."""
    from harness.report.commands import table_store
    from harness.report.spec import load_spec
    from harness.report.table_text import render_table
    from harness.report.tables import build_table, table_frame

    loaded = load_spec(Path(spec))
    store = table_store(loaded, runs_dir and str(runs_dir), collect_from and str(collect_from))
    built = build_table(loaded, store)
    if format is None:
        return table_frame(built)
    return render_table(built, checked_format(format), f"`harness table` from the spec {loaded.path}")


def checked_format(name: str) -> str:
    from harness.errors import ConfigError
    from harness.report.render import FORMATS

    if name not in FORMATS:
        raise ConfigError(f"format must be None (a DataFrame) or one of {', '.join(FORMATS)}, got {name!r}")
    return name
