"""``harness tune``: blind hyper-parameter search on a validation split carved from the training data.

Every trial is a normal run with ``data.holdout=<group>`` (that group of training classes becomes the
validation split, e.g. an Omniglot background alphabet), ``eval.test=false`` (the test episodes are
never scored) and the same training budget (``--budget-minutes``, or a step or FLOP cap given with
``--set``). Trials are drawn without replacement from the grid of a search-space file (``overrides.Grid``)
with a fixed seed, so two methods given the same number of trials get comparable searches. They run as one
sweep (harness/sweep/): local worker processes, or one SLURM job array; finished trials are not run again.
Their runs go under ``<runs>/tuning/<method>-<bench>/`` (apart from results), and a summary — search
space, budget, every trial's settings, validation accuracy and (for methods that log them) the medians
of its mechanism scalars, the chosen settings — is written as JSON and Markdown.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

from harness.errors import ConfigError, RunFailed

TUNING_SEED = 0x7E57
MECHANISM_COLUMNS = ("inner_gain", "match_kl", "grad_ratio")  # shown per trial where the method logs them


def load_space(path: str):
    """A search space: ``{group.key: [value, ...]}`` (YAML), as a settings grid."""
    from harness.config import load_yaml
    from harness.overrides import Grid

    space = load_yaml(path)
    for key, values in space.items():
        if "." not in key or not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: each entry must be group.key: [values...], got {key}: {values!r}")
    return Grid.from_mapping(space, path)


def draw_trials(space: dict[str, list], trials: int) -> list[dict[str, object]]:
    """``trials`` distinct grid points, drawn with a fixed Philox key (the whole grid if it is smaller)."""
    import numpy as np

    from harness.config import MAX_SWEEP_RUNS

    keys = sorted(space)
    size = math.prod(len(space[k]) for k in keys)
    if size > MAX_SWEEP_RUNS:  # counted before the grid is made, as sweeps count theirs
        raise ConfigError(
            f"the search space is a grid of {size:,} points ({' × '.join(str(len(space[k])) for k in keys)}); "
            f"at most {MAX_SWEEP_RUNS:,}: give fewer values per key"
        )
    grid = list(itertools.product(*(space[k] for k in keys)))
    order = np.argsort(np.random.Philox(key=TUNING_SEED).random_raw(len(grid)), kind="stable")
    return [dict(zip(keys, grid[i])) for i in order[:trials]]


def run_tuning(
    method: str,
    bench: str,
    space_file: str,
    trials: int,
    budget_minutes: float,
    holdout: str | None,
    sets: list[str],
    runs_dir: Path,
    out: Path | None,
    seed: int = 0,
    device: str = "auto",
    log: dict | None = None,
    executor: str | None = None,
    profile: str | None = None,
    parallelism: int | None = None,
) -> dict:
    """Run the trials as one sweep (finished ones are skipped), pick the best validation accuracy, write the
    summary. ``log``: ``log.*`` settings (``--logger``) for every trial, kept out of the summary."""
    from harness.overrides import Overrides
    from harness.store import read_record
    from harness.sweep.plan import Sweep, add_runs
    from harness.sweep.profiles import choose_executor, load_profile
    from harness.sweep.status import print_status
    from harness.sweep.submit import Launch, follow, launch_runs, local_cores

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if budget_minutes < 0:
        raise ConfigError(f"--budget-minutes must be 0 (no time limit) or more, got {budget_minutes}")
    space = load_space(space_file)
    fixed = Overrides(
        {**({"data.holdout": holdout} if holdout else {}), "eval.test": False, "train.budget_minutes": budget_minutes}
    ).merged(Overrides.from_text(sets), log or {})
    drawn = draw_trials(space, trials)
    runs: dict = {}
    keys = [  # every trial checked (settings, data) before any is submitted
        add_runs(runs, f"trial {number}", method, bench, dict(fixed.merged(settings)), [seed])[0]
        for number, settings in enumerate(drawn, 1)
    ]
    planned = list(runs.values())
    store = Path(runs_dir) / "tuning" / f"{method}-{bench}"
    sweep = Sweep(store, f"tune-{method}-{bench}")
    chosen_executor = choose_executor(executor, profile)
    profile_tree, profile_source = load_profile(profile)
    lanes = parallelism or (profile_tree["parallelism"] if chosen_executor == "slurm" else local_cores())
    launch = Launch(chosen_executor, profile_tree, profile_source, lanes, device)
    launch_runs(
        sweep,
        planned,
        {"tune": {"method": method, "bench": bench, "space": dict(space)}},
        launch,
        SimpleNamespace(force=False, retry_failed=True),
    )
    print_status(sweep, follow(sweep, planned), [], lines=10)
    rows = []
    for settings, key in zip(drawn, keys):
        record = read_record(Path(runs[key].run_dir)) or {"status": "failed", "reason": "no record was written"}
        if record["status"] != "ok":  # a trial that diverged or died is a result too: the worst
            rows.append({"settings": settings, "val_accuracy": None, "failed": str(record.get("reason"))[:300]})
            continue
        rows.append(
            {
                "settings": settings,
                "val_accuracy": record["val_accuracy"],
                "steps": record["steps"],
                "train_seconds": record["train_seconds"],
                "run_id": record["run_id"],
                **({"mechanisms": record["mechanisms"]} if record.get("mechanisms") else {}),
            }
        )
    finished = [r for r in rows if r["val_accuracy"] is not None]
    if not finished:
        raise RunFailed(f"every trial failed; see `harness status tune-{method}-{bench} --runs-dir {store}`")
    best = max(finished, key=lambda r: r["val_accuracy"])
    summary = {
        "method": method,
        "benchmark": bench,
        "holdout": holdout,
        "budget_minutes": budget_minutes,
        "trials": trials,
        "seed": seed,
        "fixed": sets,
        "space": dict(space),
        "results": rows,
        "chosen": best["settings"],
        "chosen_val_accuracy": best["val_accuracy"],
    }
    if out is not None:
        write_summary(summary, Path(out))
    return summary


def write_summary(summary: dict, out: Path) -> None:
    """``out``.json and ``out``.md."""
    from tabulate import tabulate

    from harness import files

    files.write_json(out.with_suffix(".json"), summary)
    keys = sorted(summary["space"])
    measured = [name for name in MECHANISM_COLUMNS if any(name in r.get("mechanisms", {}) for r in summary["results"])]
    table = [
        [
            *(r["settings"][k] for k in keys),
            "failed" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.2f}",
            *(f"{r.get('mechanisms', {}).get(name, float('nan')):.3g}" for name in measured),
            r.get("steps", ""),
            r.get("run_id", r.get("failed", "")),
        ]
        for r in summary["results"]
    ]
    lines = [
        f"# Tuning {summary['method']} on {summary['benchmark']} "
        f"(validation: {'held-out ' + summary['holdout'] if summary['holdout'] else 'the benchmark validation split'})",
        "",
        f"{summary['trials']} trials drawn from the grid below, "
        + (f"{summary['budget_minutes']} min of training each, " if summary["budget_minutes"] else "")
        + f"seed {summary['seed']}; fixed settings: {', '.join(summary['fixed']) or 'none'}. Test episodes were not scored.",
        "",
        "Search space: " + "; ".join(f"`{k}` ∈ {summary['space'][k]}" for k in keys),
        "",
        tabulate(
            table, headers=[*keys, "val acc %", *(f"{m} (median)" for m in measured), "steps", "run"], tablefmt="github"
        ),
        "",
        *(
            ["Mechanism medians: over the second half of each trial's logged steps (harness/mechanisms.py).", ""]
            if measured
            else []
        ),
        "Chosen: " + ", ".join(f"`{k}={v}`" for k, v in summary["chosen"].items()),
        "",
    ]
    files.write_text(out.with_suffix(".md"), "\n".join(lines))


def cmd_tune(args) -> int:
    from harness.loggers import logger_setting

    summary = run_tuning(
        args.method,
        args.bench,
        args.space,
        args.trials,
        args.budget_minutes,
        args.holdout,
        args.set or [],
        Path(args.runs_dir),
        Path(args.out) if args.out else None,
        args.seed,
        args.device,
        logger_setting(args.logger),
        args.executor,
        args.profile,
        args.parallelism,
    )
    print(json.dumps({"chosen": summary["chosen"], "val_accuracy": summary["chosen_val_accuracy"]}))
    return 0


def add_commands(sub) -> None:
    from harness.loggers import add_logger_option
    from harness.store import default_runs_dir
    from harness.sweep.profiles import EXECUTORS

    p = sub.add_parser(
        "tune",
        help="blind search on a held-out validation split (test episodes never scored)",
        description="Train --trials points of the --space grid (drawn without replacement with a "
        "fixed seed), each for --budget-minutes, and score each on validation episodes only "
        "(the benchmark's validation split, or the --holdout group of training classes); "
        "the test episodes are never scored. Writes the summary with the chosen settings.",
    )
    p.add_argument("--method", required=True, help="method name (see `harness list methods`)")
    p.add_argument(
        "--bench",
        required=True,
        help="benchmark name (see `harness list benchmarks`) or a benchmark file, path.yaml[:NAME]",
    )
    p.add_argument("--space", required=True, help="YAML search space: {group.key: [values...]}")
    p.add_argument("--trials", type=int, required=True, help="grid points to try (the same for every method compared)")
    p.add_argument(
        "--budget-minutes",
        type=float,
        required=True,
        help="training time of each trial (0: none; cap trials by steps or FLOPs with --set instead)",
    )
    p.add_argument(
        "--holdout",
        help="group of training classes held out as validation (data.holdout); "
        "default: the benchmark's own validation split",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="settings fixed for every trial")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument(
        "--executor", choices=EXECUTORS, help="where trials run: default slurm when `sinfo` answers, else local"
    )
    p.add_argument("--profile", help="SLURM profile, as for `harness sweep`")
    p.add_argument(
        "--parallelism", type=int, help="trials at once (SLURM: the array's throttle; local: worker processes)"
    )
    p.add_argument("--out", help="write OUT.json and OUT.md summaries (e.g. results/tuning/bmssl)")
    p.add_argument("--runs-dir", default=str(default_runs_dir()), help="result store (default ./runs or $HARNESS_RUNS)")
    add_logger_option(p)
    p.set_defaults(handler=cmd_tune)
