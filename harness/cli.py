"""The ``harness`` command line. Heavy libraries are imported inside the commands that need them,
so ``harness --help`` and ``harness list`` answer quickly."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import textwrap
from pathlib import Path

from harness import accounting, kernels, reproduce, site, tune
from harness.data import commands as data_commands
from harness.errors import HarnessError, RunFailed, Terminated
from harness.loggers import add_logger_option, logger_setting
from harness.overrides import Overrides
from harness.report import commands as report_commands
from harness.store import default_runs_dir, summary_line
from harness.sweep import commands as sweep_commands

LIST_KINDS = ("methods", "benchmarks", "heads", "backbones", "datasets")
MAX_MESSAGE = 2000  # characters of an error message
RESULT_DECIMALS = {"accuracy %": ".2f", "ci95 %": ".2f", "train_s": ".1f"}  # `harness results`' floats
SIGPIPE_EXIT = 141  # the shell's status for a process whose reader went away (128 + SIGPIPE)
# Further command groups, each with add_commands(sub); they import heavy libraries only inside commands.
COMMAND_MODULES = (data_commands, report_commands, sweep_commands, tune, reproduce, site, accounting)


# ------------------------------------------------------------------------------------------ list


LIST_WIDTH = 160  # characters a listing fits where the output is not a terminal (a file, a pipe)


def cmd_list(args) -> int:
    from harness.terminal import fitted, terminal_width

    kinds = [args.kind] if args.kind else ["methods", "benchmarks", "heads"]
    for kind in kinds:
        rows = list_rows(kind)
        headers = ["name", "family", "description", "defaults"] if kind == "methods" else ["name", "description", "defaults"]
        print(f"{kind}:")
        print(fitted(rows, headers, wrap=["description", "defaults"], drop=["family"],
                     width=terminal_width() or LIST_WIDTH, tablefmt="simple"))
        if kind == "methods":
            print(textwrap.fill("defaults: each preset's `default` level; a benchmark's family or name may change "
                                "them: `harness show METHOD --bench BENCHMARK` gives every value a run gets there",
                                terminal_width() or LIST_WIDTH))
        print()
    return 0


def list_rows(kind: str) -> list[list[str]]:
    if kind == "methods":
        from harness.methods import METHODS
        from harness.overrides import Overrides
        from harness.resolve import preset_layers

        rows = []
        for entry in METHODS:
            defaults = Overrides().merged(*(settings for _, settings in preset_layers(entry.presets)),
                                          Overrides.from_tree(entry.fixed))
            rows.append([entry.name, entry.family, entry.description, _short(defaults)])
        return rows
    if kind == "benchmarks":
        from harness.benchmarks import registry

        return [[b.name, " ".join(filter(None, [b.description, b.source and f"({b.source})"])), _short(b.summary())]
                for b in registry()]
    if kind in ("heads", "backbones"):
        from harness import catalog

        registry = catalog.HEADS if kind == "heads" else catalog.BACKBONES
        return [[e.name, e.description, _short(e.defaults)] for e in registry]
    from harness.data import DATASETS

    return [[e.name, e.description, ""] for e in DATASETS]


def cmd_show(args) -> int:
    """A method's settings: on one benchmark every value with its origin, else its presets level by level."""
    from harness.resolve import config_listing, resolve

    if args.bench:
        print(config_listing(resolve(args.method, args.bench, sets=args.set or [])))
        return 0
    import dataclasses

    from harness.methods import METHODS
    from harness.resolve import preset_levels, presets_of

    entry = METHODS.get(args.method)
    cls = entry.load()
    print(f"{entry.name} ({entry.family}): {entry.description}")
    print("presets, by level (a benchmark takes `default`, then its family's level, then its own name's; later wins):")
    for source, settings in preset_levels(presets_of(entry, cls)):
        print(f"  {source}: {_short(settings)}")
    print(f"  fixed by {entry.name}: {_short(Overrides.from_tree(entry.fixed)) or '(nothing)'}")
    print("method.* defaults: " + _short({f.name: getattr(cls.Config(), f.name) for f in dataclasses.fields(cls.Config)}))
    print(f"every value on one benchmark, with where it came from: harness show {entry.name} --bench BENCHMARK")
    return 0


def _short(mapping: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


# ------------------------------------------------------------------------------------------ run


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
    place = rundir.place(Path(args.runs_dir), cfg.method_name, cfg.benchmark, digest, args.seed,
                         run_dir=Path(args.run_dir) if args.run_dir else None, resume=args.resume)
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
    signal.signal(signal.SIGTERM, terminate)  # a scheduler's kill is recorded like Ctrl-C, with the resume command
    try:
        record = execute_processes(args.procs, request) if args.procs > 1 else execute(request)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"harness: {how}; continue this run from its last checkpoint with: {resume_command(args, place.run_dir)}",
              file=sys.stderr)
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
        print(f"dry run: {cfg.method_name} on {cfg.benchmark}: the run would first fetch its data ({exc}); the checks "
              "that need the data (episodes, training tasks, memory) were not made")
        return 0
    prepared = prepare(request.resolved, request.seed, resolve_device(request.device))
    steps = prepared.config.train.steps if prepared.method.trains else 0
    bought = f" (bought by train.budget_flops={cfg.train.budget_flops:g})" if cfg.train.budget_flops else ""
    action = "resume" if existing else "write"
    print(f"dry run: {cfg.method_name} on {cfg.benchmark}, seed {request.seed}: every check passed; nothing was made\n"
          f"  would {action}: {run_dir}\n  training: {steps} steps{bought}; test: "
          f"{len(prepared.data.test_episodes) if cfg.eval.test else 0} episodes")
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


# ------------------------------------------------------------------------------------------ eval


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


# ------------------------------------------------------------------------------------------ results


def cmd_results(args) -> int:
    from tabulate import tabulate

    from harness.store import RunStore, records_frame
    from harness.terminal import fitted

    records = [r for r in RunStore(Path(args.runs_dir))
               if (not args.bench or r.get("benchmark") == args.bench) and (not args.method or r.get("method") == args.method)]
    if not records:
        print(f"no runs under {args.runs_dir}" + (" matching the filters" if args.bench or args.method else ""))
        return 0
    frame = records_frame(records)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
        return 0
    rows = frame.astype(object).where(frame.notna(), None).values.tolist()
    options = {"floatfmt": [RESULT_DECIMALS.get(column, "g") for column in frame.columns], "missingval": ""}
    if args.format == "md":
        print(tabulate(rows, headers=list(frame.columns), tablefmt="github", **options))
    else:
        print(fitted(rows, frame.columns, wrap=["run", "reason", "benchmark", "method"],
                     drop=["head", "steps", "train_s", "episodes", "ci95 %"], tablefmt="simple", **options))
    return 0


def cmd_prune(args) -> int:
    """Remove the failed, interrupted and dead runs of a runs directory, after listing them."""
    from tabulate import tabulate

    from harness import rundir

    runs = rundir.unfinished(Path(args.runs_dir))
    if not runs:
        print(f"nothing to prune under {args.runs_dir}: no failed, interrupted or dead runs")
        return 0
    print(tabulate([[Path(r["run_dir"]).name, r.get("status"), r.get("reason") or "(its process died)"] for r in runs],
                   headers=["run", "status", "reason"], maxcolwidths=[None, None, 60]))
    if args.dry_run:
        print(f"dry run: would remove these {len(runs)} run directories")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise HarnessError(f"harness prune removes these {len(runs)} run directories: confirm with --yes "
                               "(or look first with --dry-run)")
        if input(f"remove these {len(runs)} run directories? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    for record in runs:
        rundir.remove(record)
    print(f"removed {len(runs)} run directories from {args.runs_dir}")
    return 0


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Few-shot / self-supervised benchmark harness: run methods on fixed test episodes, "
                    "sweep on SLURM, build leaderboards and paper tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list methods, benchmarks, heads (and backbones, datasets)",
                       description="What the harness knows by name, with a description and the defaults of each: "
                                   "the names --method, --bench, method.head, method.backbone and `harness data` take.")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS,
                   help="what to list: one of %(choices)s (default: methods, benchmarks and heads)")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", help="a method's settings: every value on one benchmark (--bench) with where it came "
                                     "from, else its presets level by level",
                       description="A method's settings. With --bench: the configuration a run gets on that benchmark, "
                                   "every value followed by where it came from (as `harness run --print-config`). "
                                   "Without: its preset levels (default, each family or benchmark they name), the "
                                   "settings it fixes and its method.* defaults.")
    p.add_argument("method", help="method name (see `harness list methods`)")
    p.add_argument("--bench", help="benchmark name or file: show the resolved configuration there")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --bench: an override to apply (repeatable)")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("run", help="train (if the method trains) and score one method on one benchmark",
                       description="Resolve the configuration (defaults → benchmark → presets → --config → --set), "
                                   "check it, the data and the episodes before anything is written, train (if the "
                                   "method trains), score the benchmark's fixed test episodes and write the run's "
                                   "record under --runs-dir. --print-config shows the configuration and --dry-run "
                                   "makes every check without writing.")
    add_run_options(p)
    p.add_argument("--run-dir", help="exact run directory (default: a new one under --runs-dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest unfinished run of this config and seed from its last checkpoint "
                        "(or --run-dir); a finished one is reported, not rerun")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-download", action="store_true",
                   help="a built-in dataset that is not under the data root is an error (default: fetch it, "
                        "checksum-verified, from $HARNESS_DATA_MIRROR or its public URLs)")
    p.add_argument("--procs", type=int, default=1,
                   help="processes for this one run (default 1): gloo on the CPU, nccl with one GPU each; the "
                        "global batch is split over them and the result is the one-process run's (README, Scaling out; results/README.md)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration, each value with where it came from (default, benchmark, "
                        "preset level, --config, --set), and stop")
    p.add_argument("--dry-run", action="store_true",
                   help="make every check the run makes before its first step (settings, data, episodes, training "
                        "tasks, memory, processes) and say what it would do; writes nothing")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("eval", help="score a trained run's checkpoint on another benchmark or with another head",
                       description="Score a finished run's final checkpoint on another benchmark's fixed test "
                                   "episodes, or with another head; the new record (kind eval) names its source run.")
    p.add_argument("--run", required=True, help="the trained run's directory")
    p.add_argument("--bench", required=True, help="benchmark to score on: a name or a benchmark file (path.yaml[:NAME])")
    p.add_argument("--head", help="evaluation head (default: the run's head)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="where the new record goes (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_eval)


    p = sub.add_parser("results", help="the stored runs as a table",
                       description="Every run record under the runs directory, one line each: accuracy and its 95% CI "
                                   "in percent, episodes, training steps and seconds, and why a failed run failed. "
                                   "The text table is wrapped to fit the terminal.")
    p.add_argument("--bench", help="only runs on this benchmark")
    p.add_argument("--method", help="only runs of this method")
    p.add_argument("--format", choices=["text", "md", "csv"], default="text",
                   help="text: a table for the terminal (default); md: a Markdown table; csv: comma-separated, "
                        "full precision")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_results)

    p = sub.add_parser("prune", help="remove failed, interrupted and dead runs from a runs directory (lists them first)",
                       description="List the runs under --runs-dir that failed, were interrupted, or are marked "
                                   "running though their process died (a run a live process holds is left alone), "
                                   "then remove their directories: after asking at a terminal, else with --yes.")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.add_argument("--yes", action="store_true", help="remove without asking (needed when not at a terminal)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(handler=cmd_prune)

    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="method name (see `harness list methods`)")
    p.add_argument("--bench", required=True,
                   help="benchmark name (see `harness list benchmarks`) or a benchmark file, path.yaml[:NAME]")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0); test episodes come from bench.episode_seed")
    p.add_argument("--config", help="YAML file of overrides: {bench|data|train|eval|method: {key: value}}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.steps=500 --set method.backbone=resnet12 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: cuda when available)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    add_logger_option(p)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kernels.pin(kernels.level_pins("portable"))  # the default for whatever this command runs; run and eval may re-pin
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # the reader went away (`harness list | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return SIGPIPE_EXIT
    except HarnessError as exc:
        message = str(exc)
        if len(message) > MAX_MESSAGE:  # a message quoting a huge value stays readable
            message = message[:MAX_MESSAGE] + f" … (cut at {MAX_MESSAGE:,} of {len(message):,} characters)"
        print(f"harness: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command had to read or write; anything else is a bug: let it show
        if exc.filename is None:
            raise
        print(f"harness: error: {exc.strerror or exc}: {exc.filename} (check that it exists and is writable, "
              f"e.g. --runs-dir)", file=sys.stderr)
        return HarnessError.exit_code


if __name__ == "__main__":
    sys.exit(main())
