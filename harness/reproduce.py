"""``harness reproduce SPEC.yaml``: re-run every measured cell of a paper table from its stored
configuration into a fresh store, through the sweep machinery (one SLURM job array, or local
workers), and compare each reproduced run with the stored one.

Each replay trains under the kernels its stored record names (harness/kernels.py), pinned before torch
starts. Verdicts, per stored run (one line per cell and seed):
- ``identical``: the same per-query outcomes (``trials.npy``) and so the same accuracy;
- ``DIFFERENT`` where the replay ran on the same kernels (``kernels.replay_key``: torch, CPU kernel
  capability, oneDNN ISA, threads, processes; the GPU model and CUDA/cuDNN on CUDA), where replay is exact;
- otherwise (the machine could not provide the stored kernels, or the record names none) the verdict
  is statistical, never exact: with two or more reproduced seeds of a cell, Welch's two-sample t-test of
  the reproduced against the stored seeds' accuracies (``consistent`` at p ≥ 0.05, else ``DIFFERENT``);
  one seed alone is judged against the stored seeds' spread, the 95% prediction interval of one more
  seed (t·sd·√(1 + 1/n)); a cell of one stored seed, against the two runs' 95% CIs over episodes.
Any DIFFERENT or NOT RUN makes the command exit 1.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import kernels
from harness.errors import ConfigError, HarnessError
from harness.report.stats import ALPHA


@dataclass
class Replay:
    """One stored run of a table cell and its re-run."""

    row: str
    column: str
    stored: dict
    cell: list[dict]  # every stored seed of the cell
    run: object  # harness.sweep.plan.Run
    reproduced: dict | None = None
    rule: str = field(default="", init=False)  # the tolerance rule the verdict used

    def same_kernels(self) -> bool:
        key = kernels.replay_key(self.stored)
        return key is not None and key == kernels.replay_key(self.reproduced)

    def difference(self) -> float:
        return self.reproduced["accuracy"] - self.stored["accuracy"]


def judge(replays: list[Replay]) -> list[str]:
    """The verdict of each replay (module docstring); sets each one's ``rule``."""
    import numpy as np

    from harness.store import read_scores

    verdicts = []
    for r in replays:
        if r.reproduced is None:
            r.rule = "—"
            verdicts.append("NOT RUN")
            continue
        same = np.array_equal(read_scores(r.stored["run_dir"])[1], read_scores(r.reproduced["run_dir"])[1])
        if r.same_kernels():
            r.rule = "exact (same kernels)"
            verdicts.append("identical" if same and r.stored["accuracy"] == r.reproduced["accuracy"] else "DIFFERENT")
        elif same:
            r.rule = "other kernels" if r.stored.get("kernels") else "kernels not recorded"
            verdicts.append("identical")
        else:
            verdicts.append(
                statistical(r, [o for o in replays if o.reproduced and (o.row, o.column) == (r.row, r.column)])
            )
    return verdicts


def statistical(replay: Replay, cell_replays: list[Replay]) -> str:
    """``consistent`` or ``DIFFERENT`` for a replay on other kernels (module docstring); sets ``rule``."""
    from scipy import stats

    stored = [run["accuracy"] for run in replay.cell]
    reproduced = [r.reproduced["accuracy"] for r in cell_replays]
    why = kernels.replay_difference(replay.stored, replay.reproduced)
    if len(reproduced) >= 2 and len(stored) >= 2:
        p = stats.ttest_ind(reproduced, stored, equal_var=False).pvalue
        if math.isnan(p):  # both samples constant: the same value or not
            p = 1.0 if set(reproduced) == set(stored) else 0.0
        replay.rule = f"{why}: Welch t-test of {len(reproduced)} v {len(stored)} seeds, p = {p:.3f}"
        return "consistent" if p >= ALPHA else "DIFFERENT"
    if len(stored) >= 2:
        n = len(stored)
        sd = statistics.stdev(stored)
        bound = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd * math.sqrt(1 + 1 / n)
        gap = replay.reproduced["accuracy"] - sum(stored) / n
        replay.rule = f"{why}: one seed v {n} stored seeds' sd, ± {100 * bound:.2f} about their mean"
        return "consistent" if abs(gap) <= bound else "DIFFERENT"
    bound = math.hypot(replay.stored.get("ci95") or 0.0, replay.reproduced.get("ci95") or 0.0)
    replay.rule = f"{why}: one stored seed, the two runs' 95% CIs over episodes, ± {100 * bound:.2f}"
    return "consistent" if abs(replay.difference()) <= bound else "DIFFERENT"


def plan_replays(table, only: list[str] | None, seeds: list[int] | None) -> list[Replay]:
    """The stored runs of the table's measured cells (rows in ``only``, seeds in ``seeds``), each planned
    as a sweep plans its runs (``harness.sweep.plan.add_runs``: the stored configuration resolves and its
    dataset is present, else one error naming the cell), to train under the stored run's threads and kernels."""
    import difflib

    from harness.benchmarks import reference
    from harness.settings import stored_overrides
    from harness.store import read_config
    from harness.sweep.plan import add_runs

    spec = table.spec
    labels = [row.label for row in spec.rows]
    for name in only or []:
        if name not in labels and name not in {row.method for row in spec.rows}:
            close = difflib.get_close_matches(name, labels, n=1)
            raise ConfigError(
                f"--only {name}: no such row in {spec.path}"
                + (f"; did you mean '{close[0]}'?" if close else "")
                + f". Rows: {', '.join(labels)}"
            )
    replays = []
    for row, cells in zip(spec.rows, table.cells):
        if only and row.label not in only and row.method not in only:
            continue
        for column, cell in zip(spec.columns, cells):
            if cell.group is None:
                continue
            for record in cell.group.runs:
                if seeds is not None and record["seed"] not in seeds:
                    continue
                label = f"{row.label} | {column.label}"
                if record.get("kind", "train") != "train":
                    raise HarnessError(
                        f"{label}: run {record['run_id']} was made by `harness eval`; "
                        "reproduce re-runs training runs only"
                    )
                planned = {}
                try:
                    add_runs(
                        planned,
                        label,
                        record["method"],
                        reference(record["benchmark"], record.get("benchmark_file")),
                        dict(stored_overrides(read_config(Path(record["run_dir"])))),
                        [record["seed"]],
                    )
                except HarnessError as exc:
                    exc.args = (f"cannot plan {label} seed {record['seed']}: {exc}",)
                    raise
                run = next(iter(planned.values()))
                run.threads, run.kernels = int(record.get("threads") or 0), kernels.record_pins(record)
                replays.append(Replay(row.label, column.label, record, list(cell.group.runs), run))
    if not replays:
        raise HarnessError(
            f"{spec.path}: no stored run matches"
            + (f" --only {', '.join(only)}" if only else "")
            + (f" --seeds {', '.join(map(str, seeds))}" if seeds is not None else "")
        )
    return replays


def report_lines(replays: list[Replay], verdicts: list[str], metric: str) -> str:
    """The verdicts as a table, in the spec's metric (accuracy or error, in percent)."""
    from harness.report.render import percent
    from harness.terminal import fitted

    rows = []
    for r, verdict in zip(replays, verdicts):
        stored = percent(r.stored["accuracy"], metric)
        reproduced = percent(r.reproduced["accuracy"], metric) if r.reproduced else None
        rows.append(
            [
                r.row,
                r.column,
                r.stored["seed"],
                f"{stored:.2f}",
                "—" if reproduced is None else f"{reproduced:.2f}",
                "—" if reproduced is None else f"{reproduced - stored:+.2f}",
                r.rule,
                verdict,
            ]
        )
    return fitted(
        rows,
        ["row", "column", "seed", f"stored {metric} %", f"reproduced {metric} %", "difference", "tolerance", "verdict"],
        wrap=["tolerance", "column", "row"],
        tablefmt="simple",
        disable_numparse=True,
    )


def failure_causes(statuses) -> dict[str, str]:
    """Run key → why its failed run did not finish, in one line, with its task's stderr file: the failed
    record's reason, else the reason the task wrote to its stderr before its traceback (``harness: run
    failed: LABEL: ...``, harness/sweep/task.py), else what the scheduler says (``RunStatus.reason``)."""
    causes = {}
    for status in statuses:
        if status.category != "failed":
            continue
        log = Path(status.log) if status.log else None
        said = []
        if not (status.record and status.record.get("status") == "failed") and log and log.is_file():
            prefix = f"harness: run failed: {status.run.label}: "
            said = [
                line[len(prefix) :]
                for line in log.read_text(errors="replace", encoding="utf-8").splitlines()
                if line.startswith(prefix)
            ]
        cause = (said[-1] if said else status.reason or "failed").splitlines()[0]
        causes[status.run.key] = cause + (f" (stderr: {log})" if log else "")
    return causes


def cmd_reproduce(args) -> int:
    from harness.config import parse_seeds
    from harness.report.selection import Store
    from harness.report.spec import load_spec
    from harness.report.tables import build_table
    from harness.store import RunStore, default_runs_dir
    from harness.sweep.commands import check_split
    from harness.sweep.plan import Sweep
    from harness.sweep.profiles import choose_executor, load_profile, processes_per_run
    from harness.sweep.submit import Launch, dry_run, follow, launch_runs

    if args.parallelism is not None and args.parallelism < 1:
        raise ConfigError(f"--parallelism must be a positive integer, got {args.parallelism}")
    spec = load_spec(Path(args.spec))
    table = build_table(spec, Store(RunStore(spec.evidence)))
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    executor = choose_executor(args.executor, args.profile)
    profile, profile_source = load_profile(args.profile)
    replays = plan_replays(table, args.only, seeds)
    runs = [r.run for r in replays]
    if executor == "slurm":
        check_split(runs, processes_per_run(profile))
    parallelism = args.parallelism or (profile["parallelism"] if executor == "slurm" else 1)
    launch = Launch(executor, profile, profile_source, parallelism, args.device)
    runs_dir = Path(
        args.runs_dir or default_runs_dir() / "reproduce" / f"{spec.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if runs_dir.resolve() == spec.evidence.resolve():
        raise ConfigError(f"--runs-dir {runs_dir} is the table's evidence; reproduce into a fresh store")
    sweep = Sweep(runs_dir, f"reproduce-{spec.path.stem}")
    args.force = args.retry_failed = False
    if args.dry_run:
        return dry_run(sweep, runs, launch, args)
    launch_runs(sweep, runs, {"reproduce": str(spec.path)}, launch, args)
    causes = failure_causes(follow(sweep, runs))
    fresh = RunStore(runs_dir)
    for replay in replays:
        replay.reproduced = fresh.newest_ok(replay.run.config_hash, replay.run.seed)
        if replay.reproduced is None and replay.run.key in causes:
            print(f"harness: {replay.run.label} failed: {causes[replay.run.key]}", file=sys.stderr)
    verdicts = judge(replays)
    print(report_lines(replays, verdicts, spec.metric))
    print(
        f"{verdicts.count('identical')} identical, {verdicts.count('consistent')} consistent, "
        f"{verdicts.count('DIFFERENT')} different, {verdicts.count('NOT RUN')} not run (reproduced into {runs_dir})"
    )
    return 1 if any(v in ("DIFFERENT", "NOT RUN") for v in verdicts) else 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="re-run a table's measured cells from their stored configurations and compare",
        description="Re-run every measured cell of a table spec (each stored seed) from the stored configuration "
        "into a fresh store, through the sweep machinery, and print stored vs reproduced per cell and "
        "seed: identical, or on kernels the machine could not provide, consistent (a statistical verdict, "
        "the rule printed) or DIFFERENT (exit 1).",
    )
    p.add_argument("spec", metavar="SPEC.yaml", help="table spec, e.g. results/tables/omniglot_lake.yaml")
    p.add_argument("--only", action="append", metavar="ROW", help="only this row (label or method; repeatable)")
    p.add_argument("--seeds", help="only these seeds: 0-2, 0,2 (default: every stored seed)")
    p.add_argument("--executor", choices=("local", "slurm"), help="default: slurm when `sinfo` answers, else local")
    p.add_argument("--profile", help="SLURM profile (see `harness sweep --profile`)")
    p.add_argument("--parallelism", type=int, help="runs at once (default 1: each replay uses its record's threads)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument(
        "--runs-dir",
        help="the fresh store (default runs/reproduce/<spec>-<time>); "
        "an earlier one continues an interrupted reproduction",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    p.set_defaults(handler=cmd_reproduce)
