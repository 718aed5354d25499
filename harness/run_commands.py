"""``harness run``, ``harness eval`` and ``harness prune``: one run made (or checked, or re-scored), and the runs
that did not finish removed. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from harness import kernels, loggers
from harness.errors import HarnessError, RunFailed, Terminated
from harness.loggers import add_logger_option, logger_setting
from harness.store import default_runs_dir, summary_line


def cmd_run(args) -> int:
    from harness import rundir
    from harness.resolve import config_listing, resolve
    from harness.settings import config_hash
    from harness.store import read_record

    resolved = resolve(args.method, args.bench, args.config, args.set or [], logger_setting(args.logger))
    if args.print_config:
        print(config_listing(resolved))
        if not args.dry_run:
            return 0
    cfg = resolved.config
    digest = config_hash(cfg)
    place = rundir.place(
        Path(args.runs_dir),
        cfg.method_name,
        cfg.benchmark,
        digest,
        args.seed,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        resume=args.resume,
    )
    if place.done:
        print(f"already finished: {place.run_dir}")
        print(summary_line(place.done))
        return 0
    # before torch starts: a resumed run continues under the kernels its record names, a new one at train.kernels
    stored = read_record(place.run_dir) if args.resume else None
    kernels.pin((stored and kernels.record_pins(stored)) or kernels.level_pins(cfg.train.kernels))
    from harness.distributed import check_procs
    from harness.runner import RunRequest, check_world, execute, execute_processes

    check_procs(args.procs, args.device)
    check_world(resolved, args.procs)
    request = RunRequest(resolved, args.seed, place.run_dir, args.device, args.resume, not args.no_progress)
    if args.dry_run:
        return dry_run(request, download=not args.no_download)
    from harness.resolve import check_data

    check_data(resolved, download=not args.no_download)
    loggers.preflight(cfg.log, place.run_dir)
    signal.signal(signal.SIGTERM, terminate)  # a scheduler's kill is recorded like Ctrl-C, with the resume command
    try:
        record = execute_processes(args.procs, request) if args.procs > 1 else execute(request)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"harness: {how}; continue this run from its last checkpoint with: {resume_command(args, place.run_dir)}",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        raise run_error(exc) from None
    print(summary_line(record))
    return 0


def dry_run(request, download: bool) -> int:
    """Every check ``harness run`` makes before its first step, on this machine; nothing is written (a
    missing dataset is not fetched: the checks that need its data are then named as not made)."""
    from harness import rundir
    from harness.errors import DataError
    from harness.resolve import check_data
    from harness.runner import prepare, resolve_device

    cfg, run_dir = request.resolved.config, request.run_dir
    existing = rundir.check_target(run_dir, request.resume)
    try:
        check_data(request.resolved)
    except DataError as exc:
        if not download:
            raise
        print(
            f"dry run: {cfg.method_name} on {cfg.benchmark}: the run would first fetch its data ({exc}); the checks "
            "that need the data (episodes, training tasks, memory) were not made"
        )
        return 0
    prepared = prepare(request.resolved, request.seed, resolve_device(request.device))
    steps = prepared.config.train.steps if prepared.method.trains else 0
    bought = f" (bought by train.budget_flops={cfg.train.budget_flops:g})" if cfg.train.budget_flops else ""
    action = "resume" if existing else "write"
    print(
        f"dry run: {cfg.method_name} on {cfg.benchmark}, seed {request.seed}: every check passed; nothing was made\n"
        f"  would {action}: {run_dir}\n  training: {steps} steps{bought}; test: "
        f"{len(prepared.data.test_episodes) if cfg.eval.test else 0} episodes"
    )
    return 0


def terminate(signum, frame) -> None:
    raise Terminated


def run_error(exc: Exception) -> HarnessError:
    """The one error to print for a run that failed: the reason, then the record (and, for a crash,
    the traceback) only where the runner could write them (``written_files``)."""
    from harness.store import ERROR_LOG, RESULT

    if isinstance(exc, HarnessError):  # the reason says what to fix; the traceback adds nothing
        message, shown = str(exc), {RESULT: "record"}
    else:
        message, shown = f"run failed ({type(exc).__name__}: {exc})", {RESULT: "record", ERROR_LOG: "traceback"}
    written = {p.name: p for p in getattr(exc, "written_files", [])}
    pointers = [f"{label}: {written[name]}" for name, label in shown.items() if name in written]
    if pointers:
        return RunFailed(message + "\n  " + ", ".join(pointers))
    return exc if isinstance(exc, HarnessError) else RunFailed(message)


def resume_command(args, run_dir: Path) -> str:
    """The ``harness run`` command line that continues ``run_dir``."""
    parts = ["harness", "run", "--method", args.method, "--bench", args.bench, "--seed", str(args.seed)]
    parts += ["--config", args.config] if args.config else []
    parts += [token for item in args.set or [] for token in ("--set", item)]
    parts += ["--logger", args.logger] if args.logger else []
    parts += ["--device", args.device] if args.device != "auto" else []
    parts += ["--no-download"] if args.no_download else []
    return shlex.join([*parts, "--run-dir", str(run_dir), "--resume"])


def cmd_eval(args) -> int:
    from harness.store import read_record

    pins = kernels.record_pins(read_record(Path(args.run)) or {})
    if pins:  # the trained run's kernels, before torch starts (else main's portable default)
        kernels.pin(pins)
    from harness.crosseval import evaluate_run

    try:
        record = evaluate_run(Path(args.run), args.bench, args.head, Path(args.runs_dir), args.device)
    except Exception as exc:
        raise run_error(exc) from None
    print(summary_line(record))
    return 0


def cmd_prune(args) -> int:
    """Remove the failed, interrupted and dead runs of a runs directory, after listing them."""
    from tabulate import tabulate

    from harness import rundir

    runs, foreign = rundir.unfinished(Path(args.runs_dir))
    for path, reason in foreign:
        print(f"kept {path}: not a run directory the harness made ({reason}); prune removes only those")
    if not runs:
        print(f"nothing to prune under {args.runs_dir}: no failed, interrupted or dead runs")
        return 0
    print(
        tabulate(
            [[Path(r["run_dir"]).name, r.get("status"), r.get("reason") or "(its process died)"] for r in runs],
            headers=["run", "status", "reason"],
            maxcolwidths=[None, None, 60],
        )
    )
    if args.dry_run:
        print(f"dry run: would remove these {len(runs)} run directories")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise HarnessError(
                f"harness prune removes these {len(runs)} run directories: confirm with --yes "
                "(or look first with --dry-run)"
            )
        if input(f"remove these {len(runs)} run directories? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    for record in runs:
        rundir.remove(record)
    print(f"removed {len(runs)} run directories from {args.runs_dir}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "run",
        help="train (if the method trains) and score one method on one benchmark",
        description="Resolve the configuration (defaults → benchmark → presets → --config → --set), "
        "check it, the data and the episodes before anything is written, train (if the "
        "method trains), score the benchmark's fixed test episodes and write the run's "
        "record under --runs-dir. --print-config shows the configuration and --dry-run "
        "makes every check without writing.",
    )
    add_run_options(p)
    p.add_argument("--run-dir", help="exact run directory (default: a new one under --runs-dir)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run of this config and seed from its last checkpoint "
        "(or --run-dir); a finished one is reported, not rerun",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-download",
        action="store_true",
        help="a built-in dataset that is not under the data root is an error (default: fetch it, "
        "checksum-verified, from $HARNESS_DATA_MIRROR or its public URLs)",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=1,
        help="processes for this one run (default 1): gloo on the CPU, nccl with one GPU each; the "
        "global batch is split over them and the result is the one-process run's (README, Scaling out)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration, each value with where it came from (default, benchmark, "
        "preset level, --config, --set), and stop",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="make every check the run makes before its first step (settings, data, episodes, training "
        "tasks, memory, processes) and say what it would do; writes nothing",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "eval",
        help="score a trained run's checkpoint on another benchmark or with another head",
        description="Score a finished run's final checkpoint on another benchmark's fixed test "
        "episodes, or with another head; the new record (kind eval) names its source run.",
    )
    p.add_argument("--run", required=True, help="the trained run's directory")
    p.add_argument(
        "--bench", required=True, help="benchmark to score on: a name or a benchmark file (path.yaml[:NAME])"
    )
    p.add_argument("--head", help="evaluation head (default: the run's head)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument(
        "--runs-dir",
        default=str(default_runs_dir()),
        help="where the new record goes (default ./runs or $HARNESS_RUNS)",
    )
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser(
        "prune",
        help="remove failed, interrupted and dead runs from a runs directory (lists them first)",
        description="List the runs under --runs-dir that failed, were interrupted, or are marked "
        "running though their process died (a run a live process holds is left alone), "
        "then remove their directories: after asking at a terminal, else with --yes.",
    )
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.add_argument("--yes", action="store_true", help="remove without asking (needed when not at a terminal)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(handler=cmd_prune)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="method name (see `harness list methods`)")
    p.add_argument(
        "--bench",
        required=True,
        help="benchmark name (see `harness list benchmarks`) or a benchmark file, path.yaml[:NAME]",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="training seed (default 0); test episodes come from bench.episode_seed"
    )
    p.add_argument("--config", help="YAML file of overrides: {bench|data|train|eval|method: {key: value}}")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.steps=500 --set method.backbone=resnet12 (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: cuda when available)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    add_logger_option(p)
