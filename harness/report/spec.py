"""Table spec files (``harness table SPEC.yaml``): ``TableSpec``, read and checked by ``load_spec``."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.config import load_yaml, parse_seeds
from harness.errors import ConfigError, HarnessError, UnknownNameError
from harness.report.bib import BibEntry, check_bibkey, check_cited, load_bibliography
from harness.report.ladder import Rung, load_ladder, step_keys
from harness.report.render import FORMATS, SUFFIXES
from harness.report.selection import RECORD_FIELDS, check_where
from harness.report.spec_fields import (
    Column,
    Row,
    check_keys,
    check_list,
    check_outputs,
    check_row_labels,
    names,
    spec_path,
)
from harness.report.stats import ALPHA, check_test

METRICS = ("accuracy", "error")
PLOT_KINDS = ("curves", "shots", "scarcity", "compute")
# per-row facts a table may show as columns; paper_share: steps as a share of the row's paper_steps
TRAINING_COLUMNS = ("steps", "flops", "seconds", "paper_share")
LATEX_SIZES = ("normalsize", "small", "footnotesize", "scriptsize")  # the LaTeX table's font size
CURVE_X = ("step", "seconds")


@dataclass(frozen=True)
class Reference:
    label: str
    citation: str
    bibkey: str | None
    values: dict[str, float]


@dataclass(frozen=True)
class LeaderboardRequest:
    benchmarks: list[str] | None
    head: str | None
    test: str
    alpha: float
    outputs: dict[str, Path]
    where: dict = field(default_factory=dict)  # only runs matching this filter (e.g. all training data)


@dataclass(frozen=True)
class PlotRequest:
    kind: str  # curves | shots | scarcity
    benchmarks: list[str]
    methods: list[str] | None
    head: str | None
    y: str
    x: str
    prefix: Path
    where: dict = field(default_factory=dict)  # only runs matching these settings
    rows: tuple[Row, ...] = ()  # a table spec's shots/scarcity plot: one line per row, of its method and where


@dataclass
class TableSpec:
    """A paper table, read from YAML::

        title: One-shot classification        # heading / LaTeX caption
        caption: ...                          # optional LaTeX caption, used verbatim (default: the title)
        metric: error                         # accuracy | error, in percent (default accuracy)
        decimals: 1                           # digits after the point (default 1)
        test: wilcoxon                        # wilcoxon | mcnemar: the tie test (default wilcoxon)
        alpha: 0.05                           # significance level of the tie test
        evidence: ../runs/x                   # the committed runs it is made from (default ../runs/<spec name>)
        seeds: 0-2                            # the seeds of every learned row (default 0)
        columns:                              # one per benchmark (and/or shots, head, filter)
          - {label: 20-way 1-shot, benchmark: omniglot-small1-20w1s-lake, head: prototype, where: {...}}
        rows:                                 # one per method (configuration); block: printed under that heading
          - {label: SimCLR, method: simclr, where: {data.train_fraction: 1.0}, block: self-supervised}
          - {label: ProtoNet, method: protonet, seeds: 0-2, paper_steps: 20000, reported: Snell et al.}
        training_columns: [steps, flops, seconds, paper_share]   # optional columns per row (paper_share:
                                              # steps / the row's paper_steps, the paper's training length)
        latex_size: small                     # the LaTeX table's font: normalsize | small (default) | footnotesize | ...
        references:                           # published numbers: quoted, not measured, never ranked
          - {label: Humans, citation: Lake et al. 2015, bibkey: lake2015, values: {20-way 1-shot: 4.5}}
        bibliography:                         # an entry per bibkey, written to <latex stem>.bib (harness.report.bib)
          lake2015: {type: article, author: "Lake, Brenden M. and ...", title: ..., journal: Science, year: 2015}
        notes: [free text printed under the table]
        outputs: {md: x.md, latex: x.tex, csv: x.csv}   # default: all three, named after the spec
        leaderboards:                         # optional, made by the same command
          - {benchmarks: [omniglot-small1-20w1s-lake], where: {data.train_fraction: 1.0}, outputs: {md: ../leaderboards/x.md}}
        plots:                                # optional: kind curves|shots|scarcity, out: file prefix
          - {kind: scarcity, benchmarks: [B], methods: [a, b], where: {train.budget_minutes: 3},
             out: ../plots/scarcity-B}
          - {kind: scarcity, benchmarks: [B], rows: [A, C], out: ../plots/s}   # a line per row (its method, where)
          - {kind: compute, benchmarks: [B], out: ../plots/compute-B}   # error vs training FLOPs, every rung
        ladder:                               # optional budget rungs beyond the table's own (rung 1)
          - {multiple: 4, seeds: 0-2, rows: [SimCLR]}   # these rows' training length × 4
          - {multiple: 4, seeds: 0}                     # rows: default every learned row

    A ladder rung is the same table with each learned row's training length (``train.steps``, and CACTUs'
    ``method.encoder_steps``, in its ``where``) times ``multiple``, each rung its own run and schedule; rows that do
    not train appear at every rung as they are. Entries of one multiple merge (a row's seeds are the union).
    ``harness table`` writes each rung beside the table as ``<output stem>-x<multiple>``.

    Output and evidence paths are relative to the spec's folder; ``--runs-dir`` reads another store
    and ``--collect-from DIR`` copies the evidence of every run used from DIR into ``evidence``. ``where`` keys are config keys
    (``group.key``) or record fields (kind, trained_on, head, distance); a row's and its
    column's filters both apply. A row must match at most one configuration per column.
    Reference values are in the table's metric, as published. A training column shows a row's value once
    where all its cells share it, else each column's value (``a / b``).
    """

    path: Path
    title: str
    caption: str | None  # raw LaTeX; None: the escaped title
    metric: str
    decimals: int
    test: str
    alpha: float
    evidence: Path
    seeds: list[int]
    columns: list[Column]
    rows: list[Row]
    references: list[Reference]
    notes: list[str]
    outputs: dict[str, Path]
    leaderboards: list[LeaderboardRequest]
    plots: list[PlotRequest]
    ladder: list[Rung] = field(default_factory=list)
    multiple: int = 1  # the rung this table is (1: the spec's own)
    training_columns: list[str] = field(default_factory=list)  # of TRAINING_COLUMNS
    latex_size: str = "small"  # of LATEX_SIZES
    bibliography: dict[str, BibEntry] = field(default_factory=dict)
    bib_path: Path | None = None  # the spec's .bib (beside its LaTeX output), shared by its ladder rungs

    @property
    def bibkeys(self) -> list[str]:
        """The keys the LaTeX table cites, in order."""
        return list(dict.fromkeys(ref.bibkey for ref in self.references if ref.bibkey))


SPEC_KEYS = {
    "title",
    "caption",
    "metric",
    "decimals",
    "test",
    "alpha",
    "evidence",
    "seeds",
    "columns",
    "rows",
    "references",
    "notes",
    "outputs",
    "leaderboards",
    "plots",
    "ladder",
    "training_columns",
    "latex_size",
    "bibliography",
}


def load_spec(path: Path) -> TableSpec:
    """Read and check a table spec (see ``TableSpec``)."""
    path = Path(path)
    tree = check_keys(load_yaml(path), SPEC_KEYS, {"columns", "rows"}, str(path))
    base = path.parent
    metric = tree.get("metric", "accuracy")
    if metric not in METRICS:
        raise ConfigError(f"{path}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    test, alpha = check_test(tree.get("test", "wilcoxon"), tree.get("alpha", ALPHA), str(path))
    decimals = tree.get("decimals", 1)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 4:
        raise ConfigError(f"{path}: decimals must be an integer from 0 to 4, got {decimals!r}")
    columns = []
    for i, item in enumerate(check_list(tree["columns"], f"{path}: columns")):
        context = f"{path}: columns[{i}]"
        item = check_keys(item, {"label", "benchmark", "head", "where"}, {"benchmark"}, context)
        columns.append(
            Column(
                str(item.get("label", item["benchmark"])),
                str(item["benchmark"]),
                item.get("head"),
                check_where(item.get("where"), context),
            )
        )
    rows = []
    for i, item in enumerate(check_list(tree["rows"], f"{path}: rows")):
        context = f"{path}: rows[{i}]"
        item = check_keys(
            item, {"label", "method", "where", "block", "seeds", "paper_steps", "reported"}, {"method"}, context
        )
        paper_steps = item.get("paper_steps")
        if paper_steps is not None and (
            not isinstance(paper_steps, int) or isinstance(paper_steps, bool) or paper_steps < 1
        ):
            raise ConfigError(
                f"{context}: paper_steps is the paper's number of training steps (a positive integer), got {paper_steps!r}"
            )
        rows.append(
            Row(
                str(item.get("label", item["method"])),
                str(item["method"]),
                check_where(item.get("where"), context),
                str(item.get("block", "")),
                tuple(parse_seeds(item["seeds"])) if "seeds" in item else None,
                paper_steps,
                str(item.get("reported", "")),
            )
        )
    column_labels = [c.label for c in columns]
    references = []
    for i, item in enumerate(tree.get("references") or []):
        context = f"{path}: references[{i}]"
        item = check_keys(item, {"label", "citation", "bibkey", "values"}, {"label", "citation", "values"}, context)
        values = check_keys(item["values"], set(column_labels), set(), f"{context}: values (keys are column labels)")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise ConfigError(f"{context}: values must be numbers in the table's metric ({metric}, percent)")
        references.append(
            Reference(
                str(item["label"]),
                str(item["citation"]),
                check_bibkey(item.get("bibkey"), context),
                {k: float(v) for k, v in values.items()},
            )
        )
    for i, row in enumerate(rows):
        if row.reported and row.reported not in [ref.label for ref in references]:
            raise UnknownNameError(
                "reference", row.reported, [ref.label for ref in references], f"({path}: rows[{i}] reported)"
            )
    for kind, labels in (("column", column_labels), ("row", [r.label for r in rows] + [r.label for r in references])):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"{path}: {kind} labels must be unique; repeated: {', '.join(repeated)}")
    notes = tree.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"{path}: notes must be a list of strings")
    outputs = (
        check_outputs(tree["outputs"], f"{path}: outputs", base)
        if "outputs" in tree
        else {fmt: base / f"{path.stem}{SUFFIXES[fmt]}" for fmt in FORMATS}
    )
    leaderboards = []
    for i, item in enumerate(tree.get("leaderboards") or []):
        context = f"{path}: leaderboards[{i}]"
        item = check_keys(
            item, {"benchmarks", "head", "test", "alpha", "outputs", "where"}, {"benchmarks", "outputs"}, context
        )
        board_test, board_alpha = check_test(item.get("test", test), item.get("alpha", alpha), context)
        leaderboards.append(
            LeaderboardRequest(
                names(item["benchmarks"], f"{context}: benchmarks"),
                item.get("head"),
                board_test,
                board_alpha,
                check_outputs(item["outputs"], f"{context}: outputs", base),
                check_where(item.get("where"), context),
            )
        )
    plots = []
    for i, item in enumerate(tree.get("plots") or []):
        context = f"{path}: plots[{i}]"
        item = check_keys(
            item,
            {"kind", "benchmarks", "methods", "rows", "head", "y", "x", "where", "out"},
            {"kind", "benchmarks", "out"},
            context,
        )
        request = plot_request(
            item["kind"],
            names(item["benchmarks"], f"{context}: benchmarks"),
            names(item.get("methods"), f"{context}: methods"),
            item.get("head"),
            item.get("y", "loss"),
            item.get("x", "step"),
            spec_path(base, item["out"], f"{context}: out"),
            context,
            item.get("where"),
        )
        plots.append(replace(request, rows=plot_rows(item, request, rows, context)))
    # read anywhere (a runs directory of yours); --collect-from writes it only if absent, empty or its own
    evidence = Path(os.path.normpath(base / str(tree.get("evidence", f"../runs/{path.stem}"))))
    seeds = parse_seeds(tree.get("seeds", 0))
    title = str(tree.get("title", path.stem))
    training = names(tree.get("training_columns"), f"{path}: training_columns") or []
    for name in training:
        if name not in TRAINING_COLUMNS:
            raise ConfigError(
                f"{path}: training_columns: unknown column {name!r}; valid: {', '.join(TRAINING_COLUMNS)}"
            )
    latex_size = tree.get("latex_size", "small")
    if latex_size not in LATEX_SIZES:
        raise ConfigError(f"{path}: latex_size must be one of {', '.join(LATEX_SIZES)}, got {latex_size!r}")
    bibliography = load_bibliography(tree.get("bibliography"), path)
    check_cited([ref.bibkey for ref in references if ref.bibkey], bibliography, path)
    bib_path = outputs["latex"].with_suffix(".bib") if bibliography and "latex" in outputs else None
    spec = TableSpec(
        path,
        title,
        tree.get("caption"),
        metric,
        decimals,
        test,
        float(alpha),
        evidence,
        seeds,
        columns,
        rows,
        references,
        notes,
        outputs,
        leaderboards,
        plots,
        load_ladder(tree.get("ladder"), rows, seeds, path),
        training_columns=list(dict.fromkeys(training)),
        latex_size=latex_size,
        bibliography=bibliography,
        bib_path=bib_path,
    )
    check_names(spec)
    return spec


def check_names(spec: TableSpec) -> None:
    """Unknown methods, benchmarks and config keys in a spec are errors with the closest match
    (a typo would otherwise be a table of empty cells). A column's benchmark may be a benchmark file
    (relative to the spec's folder): it becomes the benchmark's name."""
    from harness.benchmarks import get_benchmark, registry
    from harness.methods import METHODS

    for i, row in enumerate(spec.rows):
        check_name(METHODS, row.method, f"{spec.path}: rows[{i}] ({row.label!r}): method")
        check_where_keys(row.where, [row.method], f"{spec.path}: rows[{i}] ({row.label!r})")
    methods = [row.method for row in spec.rows]
    benchmarks = registry()
    for i, column in enumerate(spec.columns):
        try:
            found = get_benchmark(column.benchmark, spec.path.parent)
        except HarnessError as exc:
            raise ConfigError(f"{spec.path}: columns[{i}] ({column.label!r}): benchmark: {exc}") from None
        spec.columns[i] = replace(column, benchmark=found.name, source=found.source)
        if found.name not in benchmarks:  # leaderboards and plots may name a column's file benchmark
            benchmarks.add(found.name, found)
        check_where_keys(column.where, methods, f"{spec.path}: columns[{i}] ({column.label!r})")
    for i, request in enumerate(spec.leaderboards):
        for benchmark in request.benchmarks or []:
            check_name(benchmarks, benchmark, f"{spec.path}: leaderboards[{i}]: benchmark")
        check_where_keys(request.where, methods, f"{spec.path}: leaderboards[{i}]")
    for i, request in enumerate(spec.plots):
        for benchmark in request.benchmarks:
            check_name(benchmarks, benchmark, f"{spec.path}: plots[{i}]: benchmark")
        for method in request.methods or []:
            check_name(METHODS, method, f"{spec.path}: plots[{i}]: method")
        drawn = request.methods or [row.method for row in request.rows] or methods
        check_where_keys(request.where, drawn, f"{spec.path}: plots[{i}]")


def check_name(registry, name: str, context: str) -> None:
    try:
        registry.get(name)
    except HarnessError as exc:
        raise ConfigError(f"{context}: {exc}") from None


def check_where_keys(where: dict, methods: list[str], context: str) -> None:
    """Every ``group.key`` of a filter must be a setting some run could have, and its value of that setting's
    type (a value no run can hold would filter every run out unseen)."""
    from harness.config import coerce
    from harness.settings import config_keys, config_types  # imports the methods

    if not where:
        return
    known, types = config_keys(methods), config_types(methods)
    for key, value in where.items():
        if key in types:
            problems = []
            for tp in types[key]:
                try:
                    coerce(value, tp, key)
                    break
                except ConfigError as exc:
                    problems.append(str(exc))
            else:
                raise ConfigError(f"{context}: where {problems[0]}, so no run can match")
        if key in RECORD_FIELDS or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known | set(RECORD_FIELDS)), n=1)
        raise ConfigError(
            f"{context}: where key '{key}' is no setting of {', '.join(sorted(set(methods)))}"
            + (f"; did you mean '{close[0]}'?" if close else "")
            + f" (valid: record fields {', '.join(RECORD_FIELDS)} or group.key config keys; "
            "see a run's config.yaml)"
        )


def rung_specs(spec: TableSpec) -> list[TableSpec]:
    """The table at each ladder rung, in increasing multiple: scaled rows, their seeds, own outputs."""
    out = []
    for multiple in sorted({rung.multiple for rung in spec.ladder}):
        seeds: dict[str, set[int]] = {}
        for rung in spec.ladder:
            if rung.multiple == multiple:
                for label in rung.rows:
                    seeds.setdefault(label, set()).update(rung.seeds)
        rows = []
        for row in spec.rows:
            if not step_keys(row):
                rows.append(row)  # no training: the same runs at every rung
            elif row.label in seeds:
                where = {k: v * multiple if k in step_keys(row) else v for k, v in row.where.items()}
                rows.append(replace(row, where=where, seeds=tuple(sorted(seeds[row.label]))))
        outputs = {fmt: p.with_name(f"{p.stem}-x{multiple}{p.suffix}") for fmt, p in spec.outputs.items()}
        out.append(
            replace(
                spec,
                title=f"{spec.title} — {multiple}× the step caps",
                caption=None,
                rows=rows,
                outputs=outputs,
                leaderboards=[],
                plots=[],
                ladder=[],
                multiple=multiple,
            )
        )
    return out


def merge_where(row: Row, column: Column, spec_path: Path) -> dict:
    """The filters of a row and a column together; contradicting ones are an error."""
    for key in set(row.where) & set(column.where):
        if row.where[key] != column.where[key]:
            raise ConfigError(
                f"{spec_path}: row '{row.label}' and column '{column.label}' filter {key} to different "
                f"values ({row.where[key]!r} vs {column.where[key]!r}); no run can match both"
            )
    return {**column.where, **row.where}


def plot_rows(item: dict, request: PlotRequest, rows: list[Row], context: str) -> tuple[Row, ...]:
    """The table rows a spec's shots or scarcity plot draws (``rows:``, instead of ``methods:``)."""
    chosen = names(item.get("rows"), f"{context}: rows")
    if chosen is None:
        return ()
    if request.kind not in ("shots", "scarcity") or request.methods:
        raise ConfigError(
            f"{context}: rows (one line per table row) are for shots and scarcity plots, in place of methods; "
            f"this {request.kind} plot " + ("also names methods" if request.methods else "cannot take them")
        )
    labels = [row.label for row in rows]
    check_row_labels(chosen, labels, f"{context}: rows")
    return tuple(rows[labels.index(label)] for label in chosen)


def plot_request(
    kind: str,
    benchmarks: list[str] | None,
    methods: list[str] | None,
    head: str | None,
    y: str,
    x: str,
    prefix: Path,
    context: str,
    where: Mapping | None = None,
) -> PlotRequest:
    """A checked plot request (from the command line or a spec's ``plots``); ``where`` filters the runs."""
    if kind not in PLOT_KINDS:
        raise ConfigError(f"{context}: plot kind must be one of {', '.join(PLOT_KINDS)}, got {kind!r}")
    if not benchmarks:
        raise ConfigError(f"{context}: a {kind} plot needs benchmarks")
    if kind in ("curves", "scarcity", "compute") and len(benchmarks) != 1:
        raise ConfigError(f"{context}: a {kind} plot is about one benchmark, got {', '.join(benchmarks)}")
    if kind == "curves" and not methods:
        raise ConfigError(f"{context}: a curves plot needs the method(s) whose training curves to draw")
    if x not in CURVE_X:
        raise ConfigError(f"{context}: x must be one of {', '.join(CURVE_X)}, got {x!r}")
    return PlotRequest(kind, benchmarks, methods, head, y, x, Path(prefix), check_where(where, context))
