"""The ``harness leaderboard``, ``table`` and ``plot`` commands, and a spec's outputs and evidence."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness import files
from harness.errors import ConfigError, HarnessError
from harness.overrides import Overrides
from harness.report.bib import bib_text
from harness.report.leaderboard import build_boards, render_leaderboard
from harness.report.plots import make_plot, plot_compute, plot_curves
from harness.report.render import FORMATS, SUFFIXES, write_output
from harness.report.selection import Store, make_labels, read_settings
from harness.report.spec import CURVE_X, TableSpec, load_spec, plot_request, rung_specs
from harness.report.stats import ALPHA, TESTS, check_test
from harness.report.table_text import render_table
from harness.report.tables import build_table, without_rungs
from harness.store import RunStore, copy_evidence, default_runs_dir, read_record


def made_by_spec(spec_path: Path, out_path: Path) -> str:
    """How a spec-made file names its spec: relative to the file, so no absolute path is written."""
    relative = Path(os.path.relpath(spec_path.resolve(), out_path.resolve().parent)).as_posix()
    return f"`harness table` from the spec {relative} (path relative to this file)"


def make_spec_outputs(spec: TableSpec, store: Store) -> tuple[list[Path], list[dict]]:
    """Write the spec's table at each ladder rung, its .bib, leaderboards and plots (of rung 1's runs); returns
    the files written and the records they use (call inside ``files.batch()`` so that a failure writes
    nothing)."""
    table = build_table(spec, store)
    rungs = [build_table(rung, store) for rung in rung_specs(spec)]
    used, written = list(table.records), []
    for made in [table, *rungs]:
        used += made.records
        written += [
            write_output(path, render_table(made, fmt, made_by_spec(spec.path, path)))
            for fmt, path in made.spec.outputs.items()
        ]
    if spec.bib_path:  # the entries the LaTeX tables (every rung's) cite
        written.append(
            write_output(
                spec.bib_path, bib_text(list(spec.bibliography.values()), made_by_spec(spec.path, spec.bib_path))
            )
        )
    store = without_rungs(store, table, rungs)
    for request in spec.leaderboards:
        boards = build_boards(store, request.benchmarks, request.head, request.test, request.alpha, request.where)
        used += [r for board in boards for r in board.records]
        written += [
            write_output(
                path, render_leaderboard(boards, fmt, made_by_spec(spec.path, path), request.test, request.alpha)
            )
            for fmt, path in request.outputs.items()
        ]
    for request in spec.plots:
        if request.kind == "compute":  # from the table at every rung
            paths, records = plot_compute([table, *rungs], request, made_by_spec(spec.path, request.prefix))
        else:
            paths, records = make_plot(store, request, made_by_spec(spec.path, request.prefix))
        written += paths
        used += records
    return written, used


def write_evidence(spec: TableSpec, records: list[dict]) -> Path:
    """Replace the spec's evidence folder by the evidence of exactly ``records`` (a folder only this
    spec's `harness table` made: ``evidence_owner``)."""
    with files.stage_dir(spec.evidence, evidence_owner(spec)) as staged:
        for record in {r["run_dir"]: r for r in records}.values():
            copy_evidence(record, staged)
    return spec.evidence


def evidence_owner(spec: TableSpec) -> str:
    """Who owns a spec's evidence folder: that spec's `harness table` (its path relative to the folder)."""
    relative = Path(os.path.relpath(spec.path.resolve(), spec.evidence.resolve())).as_posix()
    return f"`harness table {relative}`"


def runs_dir_of(args) -> Path:
    """--runs-dir, else $HARNESS_RUNS or ./runs."""
    return Path(args.runs_dir) if args.runs_dir else default_runs_dir()


def split_names(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated command line names → one list (None when none given)."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def cmd_leaderboard(args) -> int:
    fmt = args.format or next((f for f, s in SUFFIXES.items() if args.out and args.out.endswith(s)), "md")
    benchmarks = split_names(args.bench)
    command = [
        "harness leaderboard",
        *(f"--bench {b}" for b in benchmarks or []),
        *([f"--head {args.head}"] if args.head else []),
        *([f"--test {args.test}"] if args.test != "wilcoxon" else []),
        *([f"--alpha {args.alpha:g}"] if args.alpha != ALPHA else []),
        f"--format {fmt}",
    ]
    check_test(args.test, args.alpha, "harness leaderboard")
    boards = build_boards(Store(RunStore(runs_dir_of(args))), benchmarks, args.head, args.test, args.alpha)
    text = render_leaderboard(boards, fmt, f"`{' '.join(command)}`", args.test, args.alpha)
    if args.out:
        write_output(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def table_store(spec: TableSpec, runs_dir: str | None, collect_from: str | None) -> Store:
    """The spec's committed evidence; --runs-dir reads another store instead; --collect-from reads
    a runs directory together with the evidence (newest run of a configuration and seed wins)."""
    if runs_dir and collect_from:
        raise ConfigError(
            "--runs-dir and --collect-from exclude each other: --runs-dir reads only that store, "
            "--collect-from adds a runs directory to the committed evidence"
        )
    if runs_dir:
        return Store(RunStore(Path(runs_dir)))
    if collect_from:
        if not Path(collect_from).is_dir():
            raise HarnessError(f"--collect-from {collect_from}: no such runs directory")
        files.check_owned(spec.evidence, evidence_owner(spec))  # refused before reading (and indexing) it
        return Store(RunStore(Path(collect_from), spec.evidence))
    return Store(RunStore(spec.evidence))


def cmd_table(args) -> int:
    specs = [load_spec(Path(spec_path)) for spec_path in args.spec]
    if args.format:
        for spec in specs:
            text = render_table(
                build_table(spec, table_store(spec, args.runs_dir, args.collect_from)),
                args.format,
                f"`harness table` from the spec {spec.path}",
            )
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    written = []
    with files.batch():  # every spec's outputs, or none
        for spec in specs:
            paths, used = make_spec_outputs(spec, table_store(spec, args.runs_dir, args.collect_from))
            written += paths
            if args.collect_from:
                written.append(write_evidence(spec, used))
    if args.collect_from:  # the outputs as the evidence alone makes them (no note of a run left out of it)
        with files.batch():
            for spec in specs:
                make_spec_outputs(spec, table_store(spec, None, None))
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_verify(args) -> int:
    for spec in [load_spec(Path(path)) for path in args.spec]:
        try:
            store = Store(RunStore(spec.evidence), recheck=True)  # every file read again, whatever the index says
            for table in [spec, *rung_specs(spec)]:
                build_table(table, store)
        except HarnessError as exc:
            print(f"harness: {spec.path}: {exc}", file=sys.stderr)
            return 1
        print(f"{spec.path}: {len(store.records)} runs in {spec.evidence}, each consistent with its files")
    return 0


def cmd_plot(args) -> int:
    kind = args.plot_kind
    if kind == "curves" and args.runs:
        if args.where:
            raise ConfigError(
                "--where selects runs from the store (with --bench/--method); "
                "with --runs the given run directories are drawn as they are: drop one of them"
            )
        return plot_given_runs(args)
    if kind == "curves":
        if not args.bench or not args.method:
            raise HarnessError("harness plot curves needs --runs RUN_DIR ... or --bench B --method M")
        benchmarks, methods = [args.bench], split_names(args.method)
        default_prefix = "-".join(["curves", args.bench, *methods])
    else:
        benchmarks = split_names(args.benches) if kind == "shots" else [args.bench]
        methods = split_names(args.methods)
        default_prefix = "-".join([kind, *benchmarks])
    request = plot_request(
        kind,
        benchmarks,
        methods,
        args.head,
        args.y,
        args.x,
        Path(args.out or default_prefix),
        f"harness plot {kind}",
        Overrides.from_text(args.where or [], option="--where", grouped=False),
    )
    with files.batch():  # PNG, PDF and CSV together, or none
        paths, _ = make_plot(Store(RunStore(runs_dir_of(args))), request, f"`harness plot {kind}`")
    for path in paths:
        print(f"wrote {path}")
    return 0


def plot_given_runs(args) -> int:
    """``harness plot curves --runs RUN_DIR ...``: curves of exactly these runs."""
    records = []
    for run_dir in args.runs:
        record = read_record(Path(run_dir))
        if record is None:
            raise HarnessError(
                f"{run_dir} holds no run record (result.json); pass run directories made by `harness run`"
            )
        records.append(record)
    labels = make_labels(
        [str(r.get("method")) for r in records],
        [read_settings(r) for r in records],
        [str(r.get("config_hash")) for r in records],
    )
    runs = [(f"{label} seed {r.get('seed')}", r) for label, r in zip(labels, records)]
    with files.batch():
        paths = plot_curves(runs, args.x, args.y, Path(args.out or "curves"), "`harness plot curves`")
    for path in paths:
        print(f"wrote {path}")
    return 0


def add_commands(sub) -> None:
    """Add ``leaderboard``, ``table`` and ``plot`` to the ``harness`` command line."""

    p = sub.add_parser(
        "leaderboard",
        help="one ranked table per benchmark from the stored runs (paired tests, ties)",
        description="Rank the stored runs of each benchmark: accuracy ± 95% CI, seeds, episodes, "
        "training time, peak memory, device. Methods not significantly worse than the best "
        "on the same test episodes (the paired --test, Holm-corrected) share rank 1.",
    )
    p.add_argument(
        "--bench",
        action="append",
        metavar="B",
        help="benchmark (repeatable or comma-separated; default: all with runs)",
    )
    p.add_argument("--head", help="only runs scored with this head")
    p.add_argument("--format", choices=FORMATS, help="md | latex | csv (default: from --out's suffix, else md)")
    p.add_argument("--out", metavar="FILE", help="write here (atomically) instead of printing")
    p.add_argument("--test", choices=TESTS, default="wilcoxon", help="paired test for ties (default wilcoxon)")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level of the tie test (default {ALPHA})")
    p.add_argument("--runs-dir", help="result store (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser(
        "verify",
        help="check a table spec's committed evidence: every run's files against its record",
        description="Every run in each spec's evidence folder: its record readable, its trials giving "
        "its accuracy with the record's episodes and queries, its config and training log "
        "readable; and the spec's tables buildable from them. Exit 1 naming the first "
        "damaged file.",
    )
    p.add_argument("spec", nargs="+", metavar="SPEC.yaml", help="table spec(s), e.g. results/tables/*.yaml")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser(
        "table",
        help="paper table(s) from spec files: writes the outputs each spec names",
        description="Build each spec's paper table (rows: methods, columns: benchmarks; best bold, ties "
        "underlined) from its committed evidence and write the Markdown, LaTeX and CSV, "
        "leaderboards and plots it names, all or nothing.",
    )
    p.add_argument("spec", nargs="+", metavar="SPEC.yaml", help="table spec(s), e.g. results/tables/*.yaml")
    p.add_argument(
        "--format", choices=FORMATS, help="print the table in this format instead of writing the spec's outputs"
    )
    p.add_argument("--runs-dir", help="read this result store instead of the spec's committed evidence")
    p.add_argument(
        "--collect-from",
        metavar="DIR",
        help="read the runs in DIR together with the committed evidence and replace the spec's evidence "
        "folder by the evidence of exactly the runs the outputs use (never checkpoints)",
    )
    p.set_defaults(handler=cmd_table)

    p = sub.add_parser(
        "plot",
        help="training curves, accuracy vs shots, data-scarcity curves (PNG, PDF, CSV)",
        description="Draw a plot from the stored runs as PNG and PDF, with a CSV of the plotted points. "
        "`harness plot KIND --help` explains each kind.",
    )
    kinds = p.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    k = kinds.add_parser(
        "curves",
        help="training curves from train_log.csv",
        description="One training curve per run (--runs), or per seed of each configuration of "
        "--method on --bench (the newest ok run), from its train_log.csv.",
    )
    k.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="these run directories")
    k.add_argument("--bench", help="with --method: the newest ok run per seed of each configuration")
    k.add_argument("--method", action="append", help="method(s) (repeatable or comma-separated)")
    k.add_argument("--y", default="loss", help="train_log.csv column to plot (default loss)")
    k.add_argument("--x", default="step", choices=CURVE_X, help="x axis (default step)")
    k.add_argument("--head", help="only runs scored with this head")
    k = kinds.add_parser(
        "shots",
        help="accuracy vs shots across benchmarks of one family",
        description="Accuracy ± 95% CI of each method against the shots of benchmarks that differ "
        "only in shots (e.g. 5-way 1-shot and 5-way 5-shot).",
    )
    k.add_argument(
        "--benches",
        "--bench",
        dest="benches",
        action="append",
        required=True,
        metavar="B",
        help="benchmarks differing in shots (repeatable or comma-separated)",
    )
    k.add_argument("--methods", action="append", help="methods (default: all with runs)")
    k.add_argument("--head", help="only runs scored with this head")
    k = kinds.add_parser(
        "scarcity",
        help="accuracy vs data.train_fraction on one benchmark",
        description="Accuracy ± 95% CI of each method against the fraction of the training data "
        "it trained on (data.train_fraction), on one benchmark.",
    )
    k.add_argument("--bench", required=True, help="benchmark")
    k.add_argument("--methods", action="append", help="methods (default: all with runs)")
    k.add_argument("--head", help="only runs scored with this head")
    for name, k in kinds.choices.items():
        if name != "curves":
            k.set_defaults(y="loss", x="step")
        k.add_argument(
            "--where",
            action="append",
            metavar="KEY=VALUE",
            help="only runs with this setting, e.g. train.budget_minutes=3 (repeatable)",
        )
        k.add_argument(
            "--out", metavar="PREFIX", help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv (default: KIND-BENCH)"
        )
        k.add_argument("--runs-dir", help="result store (default ./runs or $HARNESS_RUNS)")
        k.set_defaults(handler=cmd_plot)
