"""Plots: training curves, accuracy vs shots, data-scarcity curves and a table's error against training
FLOPs across its ladder, as PNG, PDF and CSV (matplotlib)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import files
from harness.errors import HarnessError
from harness.report.ladder import step_keys
from harness.report.render import csv_text, percent, provenance_text, write_output
from harness.report.selection import RunGroup, Store, check_same_episodes, commit_of, make_labels, read_settings, run_id
from harness.report.spec import PlotRequest
from harness.store import TRAIN_LOG


@dataclass
class Series:
    """One line of an accuracy plot: a method configuration's points (x, group), by x."""

    method: str
    settings: dict
    config_hash: str
    points: list[tuple[float, str, RunGroup]] = field(default_factory=list)  # (x, benchmark, group)
    label: str = ""


def accuracy_series(store: Store, request: PlotRequest) -> tuple[list[Series], str]:
    """The lines of a shots or scarcity plot and the x axis' setting name.

    shots: x = ``bench.shots``; a line is one configuration apart from the benchmark (``bench.*``,
    ``benchmark``, ``kind``). scarcity: training runs only (eval records do not keep the source's
    fraction); x = ``data.train_fraction``; a line is one configuration apart from that fraction.
    With a table spec's ``rows``, a line is one row instead: its method's runs that match its ``where``.
    """
    if request.kind == "shots":
        x_key, where = "bench.shots", dict(request.where)
    else:
        x_key, where = "data.train_fraction", {**request.where, "kind": "train"}
    series: dict[tuple, Series] = {}
    drawn = [(row.label, [row.method], {**where, **row.where}) for row in request.rows] or [
        (None, request.methods, where)
    ]
    for benchmark in request.benchmarks:
        selections = [(label, store.select(benchmark, methods, request.head, w)) for label, methods, w in drawn]
        check_same_episodes([g for _, s in selections for g in s.groups], f"plot {request.kind} {benchmark}")
        for row, group in ((label, group) for label, selection in selections for group in selection.groups):
            x = group.settings.get(x_key)
            if not isinstance(x, (int, float)):
                raise HarnessError(
                    f"run {group.runs[0]['run_id']} has no {x_key} in its config.yaml; cannot place it "
                    f"on a {request.kind} plot"
                )
            line_settings = {
                k: v
                for k, v in group.settings.items()
                if k != x_key
                and not (request.kind == "shots" and (k.startswith("bench.") or k in ("benchmark", "kind")))
            }
            if request.kind == "shots" and line_settings.get("trained_on") == benchmark:
                line_settings["trained_on"] = "(the benchmark)"
            key = (row,) if row else (group.method, repr(sorted(line_settings.items(), key=lambda kv: kv[0])))
            line = series.setdefault(key, Series(group.method, line_settings, group.config_hash, label=row or ""))
            clash = [b for px, b, _ in line.points if px == x]
            if clash:
                raise HarnessError(
                    f"{group.method}: two results at {x_key}={x} for one line ({clash[0]} and {benchmark}); "
                    f"plot benchmarks that differ in {x_key}"
                )
            line.points.append((x, benchmark, group))
    if not series:
        raise HarnessError(
            f"no finished runs for a {request.kind} plot on {', '.join(request.benchmarks)}"
            + (f" of {', '.join(request.methods)}" if request.methods else "")
            + f" under {store.describe()}"
        )
    lines = list(series.values()) if request.rows else [series[key] for key in sorted(series)]
    if not request.rows:
        labels = make_labels([s.method for s in lines], [s.settings for s in lines], [s.config_hash for s in lines])
        for line, label in zip(lines, labels):
            line.label = label
    for line in lines:
        line.points.sort(key=lambda p: p[0])
    return lines, x_key


def save_figure(fig, prefix: Path, title: str, provenance: str) -> list[Path]:
    """PNG and PDF beside ``prefix``, without timestamps so that equal plots are equal bytes."""
    written = []
    for suffix, metadata in (
        (".png", {"Software": None, "Title": title, "Description": provenance}),
        (".pdf", {"CreationDate": None, "Title": title, "Subject": provenance}),
    ):
        path = prefix.with_name(prefix.name + suffix)
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, metadata=metadata)
        written.append(path)
    return written


def new_figure():
    """(pyplot, figure, axes) on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4), layout="constrained")


def plot_compute(tables: list, request: PlotRequest, made_by: str) -> tuple[list[Path], list[dict]]:
    """The table's metric against training FLOPs (log axis) at each ladder rung (``tables``: the table at
    rung 1, 4, ...): one line per learned row, its 95% CI across seeds, coloured by block; rows that do not
    train as dashed levels. The CSV keeps each point's FLOPs, training seconds and seeds."""
    import pandas as pd

    spec, (benchmark,) = tables[0].spec, request.benchmarks
    column = next((j for j, c in enumerate(spec.columns) if c.benchmark == benchmark), None)
    if column is None:
        raise HarnessError(f"{spec.path}: a compute plot of {benchmark} needs a column on it")
    lines: dict[str, list] = {}
    for table in tables:
        for row, cells in zip(table.spec.rows, table.cells):
            group = cells[column].group
            if group is None or (
                table.spec.multiple > 1 and not step_keys(row)
            ):  # untrained: the same run at every rung
                continue
            flops = [(r.get("flops") or {}).get("train") for r in group.runs]
            if None in flops:
                raise HarnessError(
                    f"run {run_id(group.runs[flops.index(None)])} has no training FLOPs: add them with "
                    f"`harness flops {spec.evidence}`"
                )
            lines.setdefault(row.label, []).append(
                {
                    "row": row.label,
                    "block": row.block,
                    "multiple": table.spec.multiple,
                    "train_flops": sum(flops) / len(flops),
                    "value_pct": round(percent(group.accuracy, spec.metric), 4),
                    "ci95_pct": round(100 * group.ci95, 4),
                    "train_seconds": group.train_seconds,
                    "seeds": " ".join(map(str, group.seeds)),
                    "runs": " ".join(run_id(r) for r in group.runs),
                    "_records": group.runs,
                }
            )
    if not lines:
        raise HarnessError(f"{spec.path}: no finished run to draw a compute plot of {benchmark}")
    plt, fig, ax = new_figure()
    fig.set_size_inches(12, 5.5)
    levels = iter(["--", ":", "-.", (0, (5, 1))])
    blocks = list(dict.fromkeys(row.block for row in spec.rows))
    colours = {block: plt.get_cmap("tab10")(i % 10) for i, block in enumerate(blocks)}
    markers, seen = "osD^v<>ph*", {}
    for label, points in lines.items():
        points = sorted({p["multiple"]: p for p in points}.values(), key=lambda p: p["multiple"])
        lines[label] = points
        block = points[0]["block"]
        if not points[0]["train_flops"]:  # no training: a level, not a point
            ax.axhline(points[0]["value_pct"], color="grey", linestyle=next(levels, "--"), linewidth=1, label=label)
            continue
        seen[block] = seen.get(block, -1) + 1  # the rows of a block: one colour, each its own marker
        marker = markers[seen[block] % len(markers)]
        ax.errorbar(
            [p["train_flops"] for p in points],
            [p["value_pct"] for p in points],
            yerr=[p["ci95_pct"] for p in points],
            color=colours[block],
            marker=marker,
            capsize=2,
            linewidth=1,
            markersize=4,
            label=f"{label} ({block})" if block else label,
        )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (FlopCounterMode; log scale)")
    ax.set_ylabel(f"test {spec.metric} (%) ± 95% CI")
    title = f"Test {spec.metric} against training FLOPs: {benchmark}"
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    records = [r for points in lines.values() for p in points for r in p["_records"]]
    try:
        written = save_figure(fig, request.prefix, title, provenance_text(made_by, records))
    finally:
        plt.close(fig)
    rows = [{k: v for k, v in p.items() if k != "_records"} for points in lines.values() for p in points]
    csv_path = request.prefix.with_name(request.prefix.name + ".csv")
    return written + [write_output(csv_path, csv_text(pd.DataFrame(rows)))], records


def make_plot(store: Store, request: PlotRequest, made_by: str) -> tuple[list[Path], list[dict]]:
    """Draw ``request``: PNG, PDF and the plotted points as CSV (``<prefix>.png|.pdf|.csv``);
    returns the files written and the records drawn."""
    if request.kind == "curves":
        runs = []
        for benchmark in request.benchmarks:
            for group in store.select(benchmark, request.methods, request.head, request.where).groups:
                runs += [(f"{group.label} seed {r['seed']}", r) for r in group.runs]
        if not runs:
            raise HarnessError(
                f"no finished runs of {', '.join(request.methods)} on {request.benchmarks[0]} under {store.describe()}"
            )
        return plot_curves(runs, request.x, request.y, request.prefix, made_by), [r for _, r in runs]
    import pandas as pd

    lines, x_key = accuracy_series(store, request)
    x_name = x_key.split(".")[1]
    rows = [
        {
            "series": line.label,
            "method": line.method,
            "benchmark": benchmark,
            x_name: x,
            "accuracy_pct": round(100 * group.accuracy, 4),
            "ci95_pct": round(100 * group.ci95, 4),
            "seeds": " ".join(map(str, group.seeds)),
            "episodes": group.episodes,
            "runs": " ".join(run_id(r) for r in group.runs),
            "commits": " ".join(commit_of(r) for r in group.runs),
        }
        for line in lines
        for x, benchmark, group in line.points
    ]
    title = (
        f"Accuracy vs shots: {', '.join(request.benchmarks)}"
        if request.kind == "shots"
        else f"Data scarcity: {request.benchmarks[0]}"
    )
    plt, fig, ax = new_figure()
    for line in lines:
        ax.errorbar(
            [p[0] for p in line.points],
            [100 * p[2].accuracy for p in line.points],
            yerr=[100 * p[2].ci95 for p in line.points],
            marker="o",
            capsize=3,
            label=line.label,
        )
    xs = sorted({p[0] for line in lines for p in line.points})
    if request.kind == "scarcity" and xs[0] > 0 and xs[-1] / xs[0] >= 10:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(
        "shots per class (bench.shots)" if request.kind == "shots" else "training data fraction (data.train_fraction)"
    )
    ax.set_ylabel("test accuracy (%) ± 95% CI")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    records = [r for line in lines for _, _, g in line.points for r in g.runs]
    try:
        written = save_figure(fig, request.prefix, title, provenance_text(made_by, records))
    finally:
        plt.close(fig)
    csv_path = request.prefix.with_name(request.prefix.name + ".csv")
    return written + [write_output(csv_path, csv_text(pd.DataFrame(rows)))], records


def plot_curves(runs: list[tuple[str, dict]], x: str, y: str, prefix: Path, made_by: str) -> list[Path]:
    """Training curves (``train_log.csv``: ``y`` against ``x``) of ``runs`` as (label, record) pairs. A curve
    of fewer than two points is drawn as its point and warned about on stderr (``sparse_curve_warning``)."""
    import pandas as pd

    frames = []
    for label, record in runs:
        path = Path(record["run_dir"]) / TRAIN_LOG
        if not path.is_file():
            raise HarnessError(
                f"run {run_id(record)} has no {TRAIN_LOG} ({record.get('method')} does not train, or the "
                "run stopped before its first log row); curves exist only for trained runs"
            )
        log = pd.read_csv(path)
        if y not in log.columns or x not in log.columns:
            raise HarnessError(
                f"{path}: no column '{y if y not in log.columns else x}'; columns there: "
                f"{', '.join(log.columns)}. Pick one with --y"
            )
        rows, log = len(log), log[[x, y]].dropna()
        if len(log) < 2:
            print(f"harness: warning: {sparse_curve_warning(record, y, len(log), rows)}", file=sys.stderr)
        frames.append(pd.DataFrame({"series": label, "run": run_id(record), x: log[x], y: log[y]}))
    points = pd.concat(frames, ignore_index=True)
    title = f"Training curves: {y}"
    plt, fig, ax = new_figure()
    for label, _ in runs:
        line = points[points["series"] == label]
        ax.plot(line[x], line[y], label=label, marker="o" if len(line) < 2 else None)
    ax.set_xlabel("training step" if x == "step" else "training seconds")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    try:
        written = save_figure(fig, prefix, title, provenance_text(made_by, [r for _, r in runs]))
    finally:
        plt.close(fig)
    return written + [write_output(prefix.with_name(prefix.name + ".csv"), csv_text(points))]


def sparse_curve_warning(record: dict, y: str, points: int, rows: int) -> str:
    """Why a run's curve has fewer than two points: its log has fewer than two rows (``train.log_every``,
    a row every that many steps and at the last step, and how to get more), or ``y`` is empty in most."""
    logged = f"{points} point{'s' if points != 1 else ''}" if points else "no points"
    text = f"run {run_id(record)}: the curve of {y} has {logged} in {TRAIN_LOG}"
    if rows >= 2:
        return text + f" ({y} is empty in {rows - points} of its {rows} rows); pick another column with --y"
    steps, every = record.get("steps"), read_settings(record).get("train.log_every")
    if isinstance(steps, int) and steps > 0 and isinstance(every, int):
        return (
            text + f": its {steps} training steps were logged every train.log_every={every} steps (and at the "
            f"last). For a curve, run it with --set train.log_every={max(1, steps // 10)} (about ten points)"
        )
    return text + "; train.log_every sets how often a run logs a row (--set train.log_every=N)"
