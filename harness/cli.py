"""The ``harness`` command line. Heavy libraries are imported inside the commands that need them,
so ``harness --help`` and ``harness list`` answer quickly."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from harness import accounting, kernels, reproduce, site, tune
from harness.errors import HarnessError, RunFailed, Terminated
from harness.loggers import add_logger_option, logger_setting
from harness.report import commands as report_commands
from harness.store import default_runs_dir, summary_line
from harness.sweep import commands as sweep_commands

LIST_KINDS = ("methods", "benchmarks", "heads", "backbones", "datasets")
MAX_MESSAGE = 2000  # characters of an error message
# Further command groups, each with add_commands(sub); they import heavy libraries only inside commands.
COMMAND_MODULES = (report_commands, sweep_commands, tune, reproduce, site, accounting)


# ------------------------------------------------------------------------------------------ list


def cmd_list(args) -> int:
    from tabulate import tabulate

    kinds = [args.kind] if args.kind else ["methods", "benchmarks", "heads"]
    for kind in kinds:
        rows = list_rows(kind)
        headers = ["name", "family", "description", "defaults"] if kind == "methods" else ["name", "description", "defaults"]
        print(f"{kind}:")
        print(tabulate(rows, headers=headers, tablefmt="simple", maxcolwidths=[None] * (len(headers) - 2) + [60, 60]))
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


def _short(mapping: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


# ------------------------------------------------------------------------------------------ run


def cmd_run(args) -> int:
    from harness.resolve import resolve
    from harness.settings import config_hash
    from harness.store import RunStore, new_run_id, read_record

    resolved = resolve(args.method, args.bench, args.config, args.set or [], logger_setting(args.logger))
    cfg = resolved.config
    digest = config_hash(cfg)
    runs_dir = Path(args.runs_dir)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume and run_dir is None:
        store = RunStore(runs_dir)
        done = store.newest_ok(digest, args.seed)
        if done:
            print(f"already finished: {done['run_dir']}")
            print(summary_line(done))
            return 0
        pending = store.latest(digest, args.seed)
        run_dir = Path(pending["run_dir"]) if pending else None
    if run_dir is None:
        run_dir = runs_dir / new_run_id(cfg.method_name, cfg.benchmark, args.seed, digest)
    # before torch starts: a resumed run continues under the kernels its record names, a new one at train.kernels
    stored = read_record(run_dir) if args.resume else None
    kernels.pin((stored and kernels.record_pins(stored)) or kernels.level_pins(cfg.train.kernels))
    from harness.distributed import check_procs
    from harness.resolve import check_data
    from harness.runner import check_world, execute, execute_processes

    check_procs(args.procs, args.device)
    check_world(resolved, args.procs)
    check_data(resolved, download=not args.no_download)
    signal.signal(signal.SIGTERM, terminate)  # a scheduler's kill is recorded like Ctrl-C, with the resume command
    try:
        if args.procs > 1:
            record = execute_processes(args.procs, resolved, args.seed, run_dir, args.device, args.resume,
                                       not args.no_progress)
        else:
            record = execute(resolved, args.seed, run_dir, device=args.device, resume=args.resume,
                             progress=not args.no_progress)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"harness: {how}; continue this run from its last checkpoint with: {resume_command(args, run_dir)}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        raise run_error(exc) from None
    print(summary_line(record))
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


# ------------------------------------------------------------------------------------------ data


def cmd_data(args) -> int:
    from tabulate import tabulate

    from harness.data import DATASETS, get_dataset
    from harness.data.base import data_root

    root = data_root(args.root or "")
    if args.action in ("status", "verify"):
        names = [args.name] if args.action == "verify" and args.name else DATASETS.names()
        datasets = [get_dataset(name) for name in names]
        print(f"data root: {root}" + (f"   mirror: {os.environ['HARNESS_DATA_MIRROR']}" if os.environ.get("HARNESS_DATA_MIRROR") else ""))
    if args.action == "status":
        rows = []
        for dataset in datasets:
            status = dataset.status(root)
            mark = {"ok": "✓", "unpinned": "✓", "missing": "✗", "bad": "✗ corrupt"}
            files = ", ".join(f"{n} {mark[s]}" for n, s in status["files"].items()) or "(generated)"
            caches = ", ".join(n + (" (corrupt)" if s == "bad" else "") for n, s in status["cached"].items())
            state = "damaged" if status["damaged"] else "ready" if status["ready"] else "missing"
            rows.append([dataset.name, state, files, caches])
        print(tabulate(rows, headers=["dataset", "state", "raw files", "decoded caches"]))
        if any(row[1] == "damaged" for row in rows):
            print("some files fail their checksums: `harness data verify` names them and the command that repairs each")
        return 0
    if args.action == "verify":
        if args.name:
            datasets[0].ensure_available(root)
        checks = [(dataset.name, check) for dataset in datasets for check in dataset.check(root)]
        present = [(name, c) for name, c in checks if c.state != "missing"]
        print(tabulate([[name, c.kind, c.path.name, c.state, c.detail] for name, c in present],
                       headers=["dataset", "kind", "file", "state", "detail"]) if present else "no dataset files under the data root")
        bad = [c for _, c in present if c.state == "bad"]
        for c in bad:
            print(f"harness: {c.path}: {c.detail}; repair: {c.repair}", file=sys.stderr)
        return 1 if bad else 0
    if not args.name:
        raise HarnessError(f"harness data {args.action} needs a dataset name: one of {', '.join(DATASETS.names())}")
    dataset = get_dataset(args.name)
    if args.action == "download":
        fetched = dataset.download(root, force=args.force)
        print(f"{args.name}: " + (f"fetched {', '.join(p.name for p in fetched)}" if fetched else "all files present"))
        written = dataset.build_caches(root, force=args.force)
        print(f"{args.name}: " + (f"decoded {', '.join(p.name for p in written)}" if written else "decoded caches verified")
              + f" in {root / dataset.folder / 'cache' / dataset.name}")
        return 0
    if args.source:
        dataset.prepare_from(root, Path(args.source))
        print(f"{args.name}: prepared from {args.source} into {root / dataset.folder}")
        return 0
    if not args.force:
        raise HarnessError("harness data prepare NAME needs --from PATH (your local copy) "
                           "or --force (rebuild the decoded caches from the raw files)")
    written = dataset.build_caches(root, force=True)
    print(f"{args.name}: rebuilt {', '.join(p.name for p in written) or 'no caches'} from {dataset.raw_dir(root)}")
    return 0


# ------------------------------------------------------------------------------------------ results


def cmd_results(args) -> int:
    from tabulate import tabulate

    from harness.store import RunStore, records_frame

    records = [r for r in RunStore(Path(args.runs_dir))
               if (not args.bench or r.get("benchmark") == args.bench) and (not args.method or r.get("method") == args.method)]
    if not records:
        print(f"no runs under {args.runs_dir}" + (" matching the filters" if args.bench or args.method else ""))
        return 0
    frame = records_frame(records)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(tabulate(frame, headers="keys", tablefmt="github" if args.format == "md" else "simple",
                       showindex=False, floatfmt=".4f", missingval=""))
    return 0


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Few-shot / self-supervised benchmark harness: run methods on fixed test episodes, "
                    "sweep on SLURM, build leaderboards and paper tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list methods, benchmarks, heads (and backbones, datasets)")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS, help="what to list (default: methods, benchmarks, heads)")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="train (if the method trains) and score one method on one benchmark")
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
                        "global batch is split over them and the result is the one-process run's (README, Scaling out)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("eval", help="score a trained run's checkpoint on another benchmark or with another head")
    p.add_argument("--run", required=True, help="the trained run's directory")
    p.add_argument("--bench", required=True, help="benchmark to score on: a name or a benchmark file (path.yaml[:NAME])")
    p.add_argument("--head", help="evaluation head (default: the run's head)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="where the new record goes (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("data", help="dataset status, verify (checksums), download (URL or $HARNESS_DATA_MIRROR), "
                                     "prepare from a local copy or rebuild caches")
    p.add_argument("action", choices=["status", "verify", "download", "prepare"])
    p.add_argument("name", nargs="?", help="dataset name (see `harness list datasets`); verify: every dataset when omitted")
    p.add_argument("--from", dest="source", help="prepare: folder holding your local copy")
    p.add_argument("--force", action="store_true",
                   help="download: fetch every raw file again; download and prepare: rebuild every decoded cache")
    p.add_argument("--root", help="data root (default $HARNESS_DATA or ~/.cache/fewshot-harness)")
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("results", help="the stored runs as a table")
    p.add_argument("--bench", help="only this benchmark")
    p.add_argument("--method", help="only this method")
    p.add_argument("--format", choices=["text", "md", "csv"], default="text")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_results)

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
        return args.handler(args)
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
