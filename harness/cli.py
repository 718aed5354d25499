"""The ``harness`` command line. Heavy libraries are imported inside the commands that need them,
so ``harness --help`` and ``harness list`` answer quickly."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from harness import accounting, kernels, reproduce, run_commands, site, tune
from harness.data import commands as data_commands
from harness.errors import ConfigError, HarnessError
from harness.overrides import Overrides
from harness.report import commands as report_commands
from harness.report import compare
from harness.store import default_runs_dir
from harness.sweep import commands as sweep_commands

LIST_KINDS = ("methods", "benchmarks", "heads", "backbones", "datasets")
MAX_MESSAGE = 2000  # characters of an error message
RESULT_DECIMALS = {"accuracy %": ".2f", "ci95 %": ".2f", "train_s": ".1f"}  # `harness results`' floats
SIGPIPE_EXIT = 141  # the shell's status for a process whose reader went away (128 + SIGPIPE)
# Further command groups, each with add_commands(sub); they import heavy libraries only inside commands.
COMMAND_MODULES = (
    run_commands,
    data_commands,
    report_commands,
    compare,
    sweep_commands,
    tune,
    reproduce,
    site,
    accounting,
)


# ------------------------------------------------------------------------------------------ list


LIST_WIDTH = 160  # characters a listing fits where the output is not a terminal (a file, a pipe)


def cmd_list(args) -> int:
    from harness.terminal import fitted, terminal_width

    kinds = [args.kind] if args.kind else ["methods", "benchmarks", "heads"]
    for kind in kinds:
        rows = list_rows(kind)
        headers = (
            ["name", "family", "description", "defaults"] if kind == "methods" else ["name", "description", "defaults"]
        )
        print(f"{kind}:")
        print(
            fitted(
                rows,
                headers,
                wrap=["description", "defaults"],
                drop=["family"],
                width=terminal_width() or LIST_WIDTH,
                tablefmt="simple",
            )
        )
        if kind == "methods":
            print(
                textwrap.fill(
                    "defaults: each preset's `default` level; a benchmark's family or name may change "
                    "them: `harness show METHOD --bench BENCHMARK` gives every value a run gets there",
                    terminal_width() or LIST_WIDTH,
                )
            )
        print()
    return 0


def list_rows(kind: str) -> list[list[str]]:
    if kind == "methods":
        from harness.methods import METHODS
        from harness.overrides import Overrides
        from harness.resolve import preset_layers

        rows = []
        for entry in METHODS:
            defaults = Overrides().merged(
                *(settings for _, settings in preset_layers(entry.presets)), Overrides.from_tree(entry.fixed)
            )
            rows.append([entry.name, entry.family, entry.description, _short(defaults)])
        return rows
    if kind == "benchmarks":
        from harness.benchmarks import registry

        return [
            [b.name, " ".join(filter(None, [b.description, b.source and f"({b.source})"])), _short(b.summary())]
            for b in registry()
        ]
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
    if args.set:
        raise ConfigError(
            f"--set {args.set[0]}: settings resolve against a benchmark's presets, so --set needs --bench; "
            f"e.g. harness show {args.method} --bench synthetic-5w1s --set {args.set[0]}"
        )
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
    print(
        "method.* defaults: " + _short({f.name: getattr(cls.Config(), f.name) for f in dataclasses.fields(cls.Config)})
    )
    print(f"every value on one benchmark, with where it came from: harness show {entry.name} --bench BENCHMARK")
    return 0


def _short(mapping: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


# ------------------------------------------------------------------------------------------ results


def cmd_results(args) -> int:
    from tabulate import tabulate

    from harness.store import RunStore, records_frame
    from harness.terminal import fitted

    records = [
        r
        for r in RunStore(Path(args.runs_dir)).check_readable()
        if (not args.bench or r.get("benchmark") == args.bench) and (not args.method or r.get("method") == args.method)
    ]
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
        print(
            fitted(
                rows,
                frame.columns,
                wrap=["run", "reason", "benchmark", "method"],
                drop=["head", "steps", "train_s", "episodes", "ci95 %"],
                tablefmt="simple",
                **options,
            )
        )
    return 0


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Few-shot / self-supervised benchmark harness: run methods on fixed test episodes, "
        "sweep on SLURM, build leaderboards and paper tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "list",
        help="list methods, benchmarks, heads (and backbones, datasets)",
        description="What the harness knows by name, with a description and the defaults of each: "
        "the names --method, --bench, method.head, method.backbone and `harness data` take.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        choices=LIST_KINDS,
        help="what to list: one of %(choices)s (default: methods, benchmarks and heads)",
    )
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "show",
        help="a method's settings: every value on one benchmark (--bench) with where it came "
        "from, else its presets level by level",
        description="A method's settings. With --bench: the configuration a run gets on that benchmark, "
        "every value followed by where it came from (as `harness run --print-config`). "
        "Without: its preset levels (default, each family or benchmark they name), the "
        "settings it fixes and its method.* defaults.",
    )
    p.add_argument("method", help="method name (see `harness list methods`)")
    p.add_argument("--bench", help="benchmark name or file: show the resolved configuration there")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="with --bench: an override to apply (repeatable)"
    )
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "results",
        help="the stored runs as a table",
        description="Every run record under the runs directory, one line each: accuracy and its 95% CI "
        "in percent, episodes, training steps and seconds, and why a failed run failed. "
        "The text table is wrapped to fit the terminal.",
    )
    p.add_argument("--bench", help="only runs on this benchmark")
    p.add_argument("--method", help="only runs of this method")
    p.add_argument(
        "--format",
        choices=["text", "md", "csv"],
        default="text",
        help="text: a table for the terminal (default); md: a Markdown table; csv: comma-separated, full precision",
    )
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_results)

    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt that something wrapped (its cause or context is one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def utf8_streams() -> None:
    """Text the harness prints (λ, ×, ✓) needs more than ASCII: where the locale gives ASCII streams (C or
    POSIX, Python's UTF-8 mode off), they write UTF-8 instead of failing on the first such character."""
    for stream in (sys.stdout, sys.stderr):
        if (getattr(stream, "encoding", "") or "").lower() in ("ascii", "ansi_x3.4-1968", "us-ascii"):
            stream.reconfigure(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    utf8_streams()
    args = build_parser().parse_args(argv)
    try:
        kernels.pin(
            kernels.level_pins("portable")
        )  # the default for whatever this command runs; run and eval may re-pin
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
    except RuntimeError as exc:  # Ctrl-C inside an import arrives wrapped (e.g. "Error calling __set_name__")
        if not interrupted(exc):
            raise
        print("harness: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command had to read or write; anything else is a bug: let it show
        if exc.filename is None:
            raise
        print(
            f"harness: error: {exc.strerror or exc}: {exc.filename} (check that it exists and is writable, "
            f"e.g. --runs-dir)",
            file=sys.stderr,
        )
        return HarnessError.exit_code


if __name__ == "__main__":
    sys.exit(main())
