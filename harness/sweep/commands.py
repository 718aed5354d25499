"""The ``harness sweep`` and ``harness status`` commands (``add_commands``). ``harness --help`` imports
this module, so neither it nor what it imports loads torch, submitit or the runner."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from harness import provenance
from harness.errors import ConfigError
from harness.loggers import add_logger_option, logger_setting
from harness.store import default_runs_dir
from harness.sweep.grid import SWEEP_FILE_KEYS, load_sweep_file, names, sweep_spec
from harness.sweep.plan import Sweep, plan_runs, table_runs
from harness.sweep.profiles import EXECUTORS, choose_executor, load_profile, processes_per_run
from harness.sweep.status import assess, cmd_status
from harness.sweep.submit import Launch, Stopped, dry_run, launch_runs, local_cores, stop_workers_on_signal, wait


def rung_list(text: str | None) -> list[int]:
    """``--rungs 1,4``: the multiples, or one error saying what is valid."""
    try:
        return [int(item) for item in names(text, "--rungs")] if text else []
    except ValueError:
        raise ConfigError(f"--rungs {text!r}: give comma-separated whole multiples, e.g. --rungs 1,4") from None


def cmd_sweep(args) -> int:
    sweep_file = load_sweep_file(args.file) if args.file else {}
    if args.table and (args.file or args.methods or args.benches or args.seeds or args.set or args.config):
        raise ConfigError(
            "--table makes the runs a table spec needs (its rows, columns and seeds); "
            "drop the grid options (FILE, --methods, --benches, --seeds, --set, --config)"
        )
    if (args.rows or args.rungs) and not args.table:
        raise ConfigError("--rows and --rungs choose among a table spec's runs: use them with --table SPEC.yaml")
    spec = None if args.table else sweep_spec(args, sweep_file)
    profile_name = args.profile or sweep_file.get("profile")
    executor = choose_executor(args.executor or sweep_file.get("executor"), profile_name)
    profile, profile_source = load_profile(profile_name)
    # Local default: one worker per core, one thread each; on the Lake ladder's rows that made 1.22x the runs
    # per hour of one 2-thread worker on 2 cores (tests/perf/bench_sweep_layouts.py, results/README.md#speed).
    parallelism = next(
        (p for p in (args.parallelism, sweep_file.get("parallelism")) if p is not None),
        profile["parallelism"] if executor == "slurm" else local_cores(),
    )
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
        raise ConfigError(f"parallelism must be a positive integer, got {parallelism!r}")
    if args.table:
        from harness.report.spec import load_spec

        table = load_spec(Path(args.table))
        grid_runs = table_runs(table, names(args.rows, "--rows") if args.rows else [], rung_list(args.rungs))
        grid = {"table": str(table.path), "evidence": str(table.evidence)}
        default_name = f"table-{table.path.stem}"
    else:
        grid_runs, grid, default_name = plan_runs(spec), asdict(spec), spec.default_name()
    log = logger_setting(args.logger)  # --logger: where every run's curves go (log.*: no part of its hash)
    check_loggers(grid_runs, log, Path(args.runs_dir))
    for run in grid_runs:
        run.overrides = {**run.overrides, **log}
    if executor == "slurm":
        check_split(grid_runs, processes_per_run(profile))
    sweep = Sweep(
        Path(args.runs_dir),
        str(args.name or sweep_file.get("name") or default_name),
        table.evidence if args.table else None,
    )
    launch = Launch(executor, profile, profile_source, parallelism, args.device)
    if args.dry_run:
        return dry_run(sweep, grid_runs, launch, args)
    launch_runs(sweep, grid_runs, grid, launch, args)
    if not args.wait:
        return 0
    try:
        with stop_workers_on_signal(sweep, executor):
            return wait(sweep, grid_runs, args.runs_dir)
    except Stopped as stopped:
        statuses, _ = assess(sweep, grid_runs)
        stopped_runs = [s for s in statuses if s.category == "failed"]
        again = provenance.command_line().replace(" --retry-failed", "")
        print(
            f"harness: sweep {sweep.name} stopped ({stopped}): its local workers stopped, {len(stopped_runs)} "
            f"run(s) recorded interrupted; continue them from their last checkpoints with: {again} --retry-failed",
            file=sys.stderr,
        )
        return 128 + stopped.signum


def check_loggers(runs, log: dict, runs_dir: Path) -> None:
    """Each run's loggers can start where its directory will be (``loggers.preflight``), before any is submitted."""
    from harness.config import LogConfig
    from harness.loggers import preflight

    for run in {json.dumps({**run.overrides, **log}, sort_keys=True, default=str): run for run in runs}.values():
        config = LogConfig()
        for key, value in {**run.overrides, **log}.items():
            if key.startswith("log."):
                setattr(config, key.split(".", 1)[1], value)
        preflight(config, runs_dir / "run")


def check_split(runs, procs: int) -> None:
    """With a multi-process profile every run must split over ``procs`` processes (``check_world``)."""
    if procs == 1:
        return
    from harness.benchmarks import reference
    from harness.resolve import resolve
    from harness.runner import check_world

    for run in {r.config_hash: r for r in runs}.values():
        check_world(resolve(run.method, reference(run.benchmark, run.bench_file), overrides=run.overrides), procs)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of methods × benchmarks × settings × seeds as one job array (SLURM or local)",
        description="Plan a grid of runs and submit the ones not finished yet: on SLURM as one submitit job array "
        "(requeued and resumed from checkpoints on preemption or time limit), or as worker processes "
        "on this machine. Runs with an ok record for the same config hash and seed are skipped.",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="sweep YAML file with any of: " + ", ".join(SWEEP_FILE_KEYS) + " (command-line flags take precedence)",
    )
    p.add_argument(
        "--table",
        metavar="SPEC.yaml",
        help="instead of a grid: every run the table spec's measured cells need (its rows × columns, "
        "with their settings, and its seeds); finished ones are skipped",
    )
    p.add_argument("--rows", help="with --table: only these rows (comma-separated labels)")
    p.add_argument("--rungs", help="with --table: only these rungs (comma-separated multiples; 1 is the table itself)")
    p.add_argument("--methods", help="comma-separated method names (see `harness list methods`)")
    p.add_argument("--benches", help="comma-separated benchmark names (see `harness list benchmarks`)")
    p.add_argument("--seeds", help="training seeds: 0-4, 0,2,5 or 0-2,7 (default 0)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=V1[,V2...]",
        help="a setting for every run, or a grid over comma-separated values, e.g. --set train.lr=0.1,0.01; "
        "commas inside [] or quotes stay in the value (repeatable)",
    )
    p.add_argument("--config", help="YAML file of overrides for every run, as in `harness run --config`")
    p.add_argument("--name", help="sweep name (default: derived from the grid); reusing a name adds to that sweep")
    p.add_argument("--executor", choices=EXECUTORS, help="default: slurm when `sinfo` answers, else local")
    p.add_argument("--profile", help="SLURM profile: a name from slurm/profiles/ (or $HARNESS_PROFILES) or a YAML file")
    p.add_argument(
        "--parallelism",
        type=int,
        help="at most this many runs at once (SLURM: the array's %%N throttle, "
        "default from the profile; local: worker processes, default one per CPU core, each with one thread)",
    )
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda, on the machine that runs each task (default auto)"
    )
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    add_logger_option(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and the sbatch settings; submit nothing")
    p.add_argument("--force", action="store_true", help="rerun finished runs too (into new run directories)")
    p.add_argument(
        "--retry-failed", action="store_true", help="resubmit failed runs (each resumes from its last checkpoint)"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="stay until the runs have finished and print their status; exit 1 if any failed",
    )
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser(
        "status",
        help="every run of a sweep: job id, SLURM state, elapsed, result or failure reason",
        description="Without SWEEP: the sweeps under the runs directory, with counts.",
    )
    p.add_argument("sweep", nargs="?", help="sweep name (as printed by `harness sweep`)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.add_argument("--lines", type=int, default=10, help="lines of a failed task's stderr to show (default 10)")
    p.set_defaults(handler=cmd_status)
