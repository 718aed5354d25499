"""``harness site [SPEC.yaml ...] [--out DIR]``: a self-contained HTML leaderboard from the same
run store and specs as ``harness table`` (each spec's committed evidence).

Pages: ``index.html`` (every table's benchmarks with the best entry its spec ranks, within the spec's
filters), ``bench/<benchmark>.html`` (the leaderboard with CI bars, ranks and ties, the paper tables,
the plots and the runs) and ``runs/<run id>.html`` (a run's configuration, provenance and training
curves). The plots are the PNGs ``harness table`` drew beside its outputs, copied into ``plots/``, so
run ``harness table`` first. CSS and charts are inline: viewing needs no network. Pages hold no clock
time and no path outside the site, so regenerating from unchanged evidence is byte-identical; the site
is written all or nothing. ``screenshot.png`` in the output folder (taken by hand) is kept.
"""

from __future__ import annotations

import csv
import glob
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness import files
from harness import site_html as h
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.report.leaderboard import Board
    from harness.report.selection import Store
    from harness.report.spec import TableSpec
    from harness.report.tables import PaperTable

DEFAULT_SPECS = "results/tables/*.yaml"
DEFAULT_OUT = "results/site"
KEPT = ("screenshot.png",)
FIRST_FIELDS = (
    "run_id",
    "kind",
    "method",
    "benchmark",
    "trained_on",
    "source_run",
    "seed",
    "config_hash",
    "status",
    "reason",
    "accuracy",
    "ci95",
    "error",
    "episodes",
    "queries_per_episode",
    "episode_digest",
    "head",
    "distance",
    "steps",
    "train_seconds",
    "eval_seconds",
    "wall_seconds",
    "budget_exhausted",
    "val_accuracy",
    "peak_memory_mb",
    "device",
    "threads",
    "platform",
    "host",
    "started",
    "finished",
    "command",
    "versions",
    "git",
)
PERCENT_FIELDS = ("accuracy", "ci95", "error", "val_accuracy")


@dataclass
class SpecView:
    """One spec filled from its evidence: the paper table, a board per benchmark and its plots."""

    spec: TableSpec
    store: Store
    table: PaperTable
    boards: dict[str, tuple[Board, str, float]] = field(default_factory=dict)  # benchmark → (board, test, alpha)
    benchmarks: list[str] = field(default_factory=list)


def slug(name: str) -> str:
    """A file name for a benchmark or run id (they use only these characters already)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def run_href(record: dict, depth: int = 1) -> str:
    return f"{'../' * depth}runs/{slug(record_id(record))}.html"


def record_id(record: dict) -> str:
    return str(record.get("run_id") or Path(record["run_dir"]).name)


def view_spec(spec_path: Path, runs_dir: Path | None = None) -> SpecView:
    """Read a spec and fill it from its committed evidence (or ``runs_dir``), as ``harness table`` does."""
    from harness.report.leaderboard import build_boards
    from harness.report.selection import Store
    from harness.report.spec import load_spec, rung_specs
    from harness.report.tables import build_table, without_rungs
    from harness.store import RunStore

    spec = load_spec(spec_path)
    store = Store(RunStore(runs_dir or spec.evidence))
    table = build_table(spec, store)
    store = without_rungs(store, table, [build_table(rung, store) for rung in rung_specs(spec)])
    view = SpecView(spec, store, table)
    for request in spec.leaderboards:
        for board in build_boards(store, request.benchmarks, request.head, request.test, request.alpha, request.where):
            view.boards.setdefault(board.selection.benchmark, (board, request.test, request.alpha))
    for j, column in enumerate(spec.columns):  # unless the spec asks for a board: the column's cells, ranked
        used = {r["run_dir"] for row in table.cells if row[j].group for r in row[j].group.runs}
        if column.benchmark not in view.boards and used:
            cells = store.without({r["run_dir"] for r in store.records} - used)  # as the rows' and column's where
            (board,) = build_boards(cells, [column.benchmark], column.head, spec.test, spec.alpha, column.where)
            view.boards[column.benchmark] = (board, spec.test, spec.alpha)
    named = [c.benchmark for c in spec.columns] + list(view.boards) + [b for p in spec.plots for b in p.benchmarks]
    view.benchmarks = list(dict.fromkeys(named))
    return view


def plot_sources(views: list[SpecView]) -> dict[str, Path]:
    """Site file name → the PNG ``harness table`` drew for each spec plot; missing ones are an error."""
    sources: dict[str, Path] = {}
    for view in views:
        for request in view.spec.plots:
            png = request.prefix.with_name(request.prefix.name + ".png")
            if not png.is_file():
                raise HarnessError(
                    f"{png} is missing: the site shows the plots `harness table` draws; run "
                    f"`harness table {view.spec.path}` first, then `harness site`"
                )
            if sources.setdefault(png.name, png) != png:
                raise HarnessError(
                    f"two specs draw plots named {png.name} ({sources[png.name]} and {png}); "
                    "rename one plot's out: in its spec"
                )
    return sources


def leaderboard_html(board: Board, test: str, alpha: float) -> str:
    """The board: rank, method, accuracy ± CI with a CI bar on a shared axis, runs and costs."""
    from harness.report.leaderboard import board_notes
    from harness.report.render import format_flops, format_memory, format_p, format_seconds, format_steps, plus_minus

    lows = [100 * (g.accuracy - g.ci95) for g in board.groups]
    highs = [100 * (g.accuracy + g.ci95) for g in board.groups]
    low, high = max(0.0, min(lows) - 2), min(100.0, max(highs) + 2)
    if high <= low:
        low, high = max(0.0, low - 1), min(100.0, high + 1)
    rows, classes = [], []
    for group, standing in zip(board.groups, board.standings):
        seeds = " ".join(h.link(run_href(r), f"seed {r['seed']}") for r in group.runs)
        rows.append(
            [
                str(standing.rank),
                h.escape(group.label),
                h.escape(plus_minus(100 * group.accuracy, 100 * group.ci95, 2)),
                h.ci_bar(100 * group.accuracy, 100 * group.ci95, low, high, standing.mark),
                seeds,
                str(group.episodes),
                h.escape(format_steps(group.steps)),
                h.escape(format_flops(group.train_flops)),
                h.escape(format_p(standing.p_vs_best)),
                h.escape(format_seconds(group.train_seconds)),
                h.escape(format_memory(group.peak_memory_mb)),
                h.escape(group.devices),
            ]
        )
        classes.append(["", "", standing.mark, *[""] * 9])
    headers = [
        "Rank",
        "Method",
        "Accuracy (%)",
        f"95% CI ({low:.0f}–{high:.0f}%)",
        "Runs",
        "Episodes",
        "Steps",
        "Train FLOPs",
        "p vs best",
        "Train time",
        "Peak memory",
        "Device",
    ]
    legend = (
        '<p class="note">Bold: best; underlined: tied with the best (shares rank 1). '
        "Bars: accuracy (dot) and its 95% confidence interval.</p>"
    )
    return (
        h.table(headers, rows, {0, 2, 5, 6, 7, 8, 9, 10}, classes) + legend + h.notes(board_notes(board, test, alpha))
    )


def paper_table_html(view: SpecView) -> str:
    """The paper table: measured rows (best bold, ties underlined, cells link their runs) with its training
    columns, the quoted published numbers apart, and the table's notes."""
    from harness.report.table_text import QUOTED_HEADING, headers
    from harness.report.tables import quoted, table_cell_text, table_notes, training_cells

    spec, table = view.spec, view.table
    labels, columns = headers(table)[1:], len(spec.columns)
    rows, classes = [], []
    for row, cells in zip(spec.rows, table.cells):
        texts = [
            h.escape(table_cell_text(cell, spec))
            + (" " + " ".join(h.link(run_href(r), f"s{r['seed']}") for r in cell.group.runs) if cell.group else "")
            for cell in cells
        ]
        rows.append([h.escape(row.label), *texts, *map(h.escape, training_cells(table, row, cells))])
        classes.append(
            ["", *(cell.standing.mark if cell.standing else "" for cell in cells), *[""] * (len(labels) - columns)]
        )
    out = [
        f"<h3>{h.escape(spec.title)}</h3>",
        h.table(["Method", *labels], rows, set(range(1, len(labels) + 1)), classes),
    ]
    if spec.references:
        refs = [
            [
                h.escape(ref.label),
                h.escape(ref.citation),
                *(h.escape(quoted(ref.values.get(c.label), spec.decimals)) for c in spec.columns),
            ]
            for ref in spec.references
        ]
        out += [
            f"<p><strong>{h.escape(QUOTED_HEADING)}</strong></p>",
            h.table(["Reference", "Source", *labels[:columns]], refs, set(range(2, columns + 2))),
        ]
    out.append(h.notes(table_notes(table, "md")))
    return "\n".join(out)


def benchmark_page(benchmark: str, views: list[SpecView], plots: dict[str, Path]) -> str:
    body = [f"<h1>{h.escape(benchmark)}</h1>"]
    for view in (v for v in views if benchmark in v.benchmarks):
        source = (
            f'<p class="note">From the table spec <code>{h.escape(view.spec.path.name)}</code> and its evidence.</p>'
        )
        if benchmark in view.boards:
            board = view.boards[benchmark][0]
            body += [
                f"<h2>Leaderboard{'' if board.title == benchmark else ': ' + h.escape(board.title)}</h2>",
                source,
                leaderboard_html(*view.boards[benchmark]),
            ]
        if any(c.benchmark == benchmark for c in view.spec.columns):
            body += ["<h2>Paper table</h2>", paper_table_html(view)]
        figures = [
            f'<figure><img src="../plots/{h.escape(name)}" alt="{h.escape(name)}">'
            f"<figcaption>{h.escape(name)}</figcaption></figure>"
            for request in view.spec.plots
            if benchmark in request.benchmarks
            for name in [request.prefix.name + ".png"]
            if name in plots
        ]
        if figures:
            body += ["<h2>Plots</h2>", *figures]
        runs = sorted((r for r in view.store.records if r.get("benchmark") == benchmark), key=record_id)
        body += [
            "<h2>Runs</h2>",
            h.table(
                ["Run", "Method", "Seed", "Status", "Accuracy (%)"],
                [
                    [
                        h.link(run_href(r), record_id(r)),
                        h.escape(str(r.get("method"))),
                        str(r.get("seed")),
                        h.escape(str(r.get("status"))),
                        "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}",
                    ]
                    for r in runs
                ],
                {2, 4},
            ),
        ]
    return h.page(benchmark, "\n".join(body), 1)


def index_page(views: list[SpecView]) -> str:
    """Per spec, its benchmarks with the best entry of the board shown for each: the spec's leaderboard
    (its where and head) or its table's column (the rows' and column's where), never a run they exclude; Runs:
    that board's runs."""
    from harness.report.render import protocol_note

    body = [
        "<h1>Leaderboards</h1>",
        '<p class="note">Regenerate with <code>harness table results/tables/*.yaml</code> and then '
        "<code>harness site</code>; every number comes from the stored runs linked on each page.</p>",
    ]
    for view in views:
        rows, changed = [], {}
        for benchmark in view.benchmarks:
            best, count, title = "", sum(1 for r in view.store.records if r.get("benchmark") == benchmark), benchmark
            if benchmark in view.boards:
                board = view.boards[benchmark][0]
                best = f"{h.escape(board.groups[0].label)} ({100 * board.groups[0].accuracy:.2f}%)"
                count, title = len(board.records), board.title
                if board.protocol_changes:
                    changed[benchmark] = board.protocol_changes
            rows.append([h.link(f"bench/{slug(benchmark)}.html", title), best, str(count)])
        body += [
            f"<h2>{h.escape(view.spec.title)}</h2>",
            f'<p class="note">Table spec <code>{h.escape(view.spec.path.name)}</code></p>',
            h.table(["Benchmark", "Best (accuracy)", "Runs"], rows, {2}),
        ]
        if changed:
            body.append(f'<p class="note">{h.escape(protocol_note(changed))}</p>')
    return h.page("Leaderboards", "\n".join(body), 0)


def field_text(key: str, value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    if key in PERCENT_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value} ({100 * value:.2f}%)"
    return value if isinstance(value, str) else json.dumps(value)


def curves_html(run_dir: Path) -> str:
    """One chart per ``train_log.csv`` column (against the step)."""
    from harness.store import TRAIN_LOG

    path = run_dir / TRAIN_LOG
    if not path.is_file():
        return '<p class="note">No training log: this run did not train.</p>'
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("step", "seconds")]
    charts = []
    for column in columns:
        points = [(float(r["step"]), float(r[column])) for r in rows if r.get(column) not in ("", None)]
        if points:
            charts.append(f"<figure>{h.line_chart(column, points, 'step')}</figure>")
    return (
        f'<div class="charts">{"".join(charts)}</div>' if charts else '<p class="note">The training log is empty.</p>'
    )


def mechanisms_html(record: dict) -> list[str]:
    """A method's mechanism scalars (medians over the second half of training) and any warning that one was
    inert (harness/mechanisms.py); nothing for a run whose method logs none."""
    medians = record.get("mechanisms") or {}
    if not medians:
        return []
    rows = [[h.escape(name), h.escape(f"{value:.4g}")] for name, value in medians.items()]
    warnings = [f'<p class="note">warning: {h.escape(text)}</p>' for text in record.get("warnings") or []]
    return [
        "<h2>Mechanisms</h2>",
        '<p class="note">Medians over the second half of training of what the method logs to show its '
        "mechanisms at work (harness/mechanisms.py).</p>",
        h.table(["Scalar", "Median"], rows),
        *warnings,
    ]


def run_page(record: dict) -> str:
    from harness.store import CONFIG, read_config

    run_dir = Path(record["run_dir"])
    shown = [k for k in FIRST_FIELDS if k in record] + sorted(
        k for k in record if k not in FIRST_FIELDS and k != "run_dir"
    )
    provenance = [[h.escape(k), h.escape(field_text(k, record[k]))] for k in shown]
    tree = read_config(run_dir) if (run_dir / CONFIG).is_file() else {}
    flat = {
        f"{group}.{key}": value
        for group, values in tree.items()
        if isinstance(values, dict)
        for key, value in values.items()
    }
    settings = {**{k: v for k, v in tree.items() if not isinstance(v, dict)}, **flat}
    config = [[h.escape(k), h.escape(field_text(k, v))] for k, v in settings.items() if k != "data.root"]
    bench = str(record.get("benchmark"))
    body = [
        f"<h1>{h.escape(record_id(record))}</h1>",
        f"<p>{h.escape(str(record.get('method')))} on {h.link(f'../bench/{slug(bench)}.html', bench)}, "
        f"seed {h.escape(str(record.get('seed')))}: {h.escape(str(record.get('status')))}</p>",
        *mechanisms_html(record),
        "<h2>Training curves</h2>",
        curves_html(run_dir),
        "<h2>Configuration</h2>",
        '<p class="note">config.yaml as resolved for the run (data.root, where the data was, left out).</p>',
        h.table(["Setting", "Value"], config),
        "<h2>Provenance</h2>",
        '<p class="note">result.json as the run wrote it.</p>',
        h.table(["Field", "Value"], provenance),
    ]
    return h.page(record_id(record), "\n".join(body), 1)


def render_site(views: list[SpecView], plots: dict[str, Path]) -> dict[str, str]:
    """Every page, by its path inside the site."""
    pages = {"index.html": index_page(views)}
    for benchmark in dict.fromkeys(b for v in views for b in v.benchmarks):
        pages[f"bench/{slug(benchmark)}.html"] = benchmark_page(benchmark, views, plots)
    for view in views:
        for record in view.store.records:
            name = f"runs/{slug(record_id(record))}.html"
            if name not in pages:
                pages[name] = run_page(record)
    return pages


def build_site(spec_paths: list[Path], out: Path, runs_dir: Path | None = None) -> tuple[int, int]:
    """Write the site for ``spec_paths`` (from their evidence, or ``runs_dir``) into ``out``, replaced
    as a whole or left as it was on any error; returns (pages, plots)."""
    views = [view_spec(Path(p), runs_dir) for p in spec_paths]
    plots = plot_sources(views)
    pages = render_site(views, plots)
    out = Path(out)
    with files.batch(), files.stage_dir(out, "`harness site`") as staged:
        for relative, text in pages.items():
            (staged / relative).parent.mkdir(parents=True, exist_ok=True)
            (staged / relative).write_text(text, encoding="utf-8")
        (staged / "plots").mkdir(exist_ok=True)
        for name, source in plots.items():
            shutil.copyfile(source, staged / "plots" / name)
        for name in KEPT:
            if (out / name).is_file():
                shutil.copyfile(out / name, staged / name)
    return len(pages), len(plots)


def cmd_site(args) -> int:
    spec_paths = args.spec or sorted(glob.glob(DEFAULT_SPECS))
    if not spec_paths:
        raise HarnessError(
            f"no table specs: {DEFAULT_SPECS} matches nothing under {Path.cwd().name}/; run "
            "`harness site` from the repository root or name the specs (harness site SPEC.yaml ...)"
        )
    runs_dir = Path(args.runs_dir) if args.runs_dir else None
    pages, plots = build_site([Path(p) for p in spec_paths], Path(args.out), runs_dir)
    print(f"wrote {args.out}/ ({pages} pages, {plots} plots): open {args.out}/index.html")
    return 0


def add_commands(sub) -> None:
    """Add ``site`` to the ``harness`` command line."""
    p = sub.add_parser(
        "site",
        help="a self-contained HTML leaderboard site from the table specs' evidence",
        description="Write an HTML site (index, one page per benchmark, one per run) from the same "
        "specs and committed evidence as `harness table`; run `harness table` first (the "
        "site copies the plots it draws). Byte-identical when nothing changed.",
    )
    p.add_argument("spec", nargs="*", metavar="SPEC.yaml", help=f"table spec(s) (default: {DEFAULT_SPECS})")
    p.add_argument(
        "--runs-dir",
        help="read this result store instead of each spec's committed evidence "
        "(as `harness table --runs-dir`, which should have drawn the plots)",
    )
    p.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"the site's folder, replaced whole (default {DEFAULT_OUT})"
    )
    p.set_defaults(handler=cmd_site)
