"""``harness flops RUN ...``: the FLOPs of stored runs made before records kept them (harness/compute.py),
counted on a scratch replay of their stored configuration: every phase's first two training steps and the
test scoring, executed and counted as a new run counts its own. FLOP counts depend only on shapes, so the
replay's counts are the stored run's; one replay serves every seed of a configuration."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.errors import HarnessError


def stored_runs(paths: list[str]) -> list[Path]:
    """Run directories named, or found one level inside the folders named."""
    found = []
    for name in paths:
        path = Path(name)
        if (path / "result.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if (p / "result.json").is_file())
        else:
            raise HarnessError(f"{path}: neither a run directory (with result.json) nor a folder of them")
    return found


def counted_flops(run_dir: Path, record: dict) -> dict:
    """The ``flops`` block of a stored run, from a scratch replay of its first steps."""
    from harness import compute
    from harness.benchmarks import reference
    from harness.resolve import resolve
    from harness.runner import RunRequest, execute
    from harness.settings import stored_overrides
    from harness.store import read_config

    overrides = dict(stored_overrides(read_config(run_dir)))
    bench = reference(record["benchmark"], record.get("benchmark_file"))
    resolved = resolve(record["method"], bench, overrides=overrides)
    steps = int(record.get("steps") or 0)
    starts = [s for s in resolved.method_class.phase_starts(resolved.config.method) if s < steps] or [0]
    with tempfile.TemporaryDirectory() as scratch:
        short = resolve(record["method"], bench, overrides={**overrides, "train.steps": min(steps, starts[-1] + 2)})
        made = execute(RunRequest(short, int(record["seed"]), Path(scratch) / "run", "cpu", progress=False))
    flops = made["flops"]
    counts = {p["from_step"]: p["step"] + p["once"] for p in flops["phases"]}
    counts.update({p["from_step"] + 1: p["step"] for p in flops["phases"]})
    redone = compute.training_flops(flops["setup"], [p["from_step"] for p in flops["phases"]], counts, steps)
    how = (
        f"recomputed by `harness flops` from the stored configuration (a scratch replay of {made['steps']} "
        f"step(s) and the test scoring); {compute.COUNTED}"
    )
    return {**redone, "eval": flops.get("eval"), "counted": how}


def cmd_flops(args) -> int:
    """Add ``flops`` to every named run whose record lacks it (one replay per configuration)."""
    from harness.rundir import not_a_run
    from harness.store import read_record, write_record

    wanted = []
    for run_dir in stored_runs(args.runs):  # every record checked before any replay or write
        record = read_record(run_dir)
        if record.get("flops") or record.get("status") != "ok":
            continue
        if reason := not_a_run(Path(run_dir), record):
            raise HarnessError(
                f"{run_dir}: not a run directory made by `harness run` ({reason}); `harness flops` counts the "
                "FLOPs of harness runs from their stored configuration: leave this one out"
            )
        wanted.append((run_dir, record))
    by_config: dict[str, dict] = {}
    added = 0
    for run_dir, record in wanted:
        key = record["config_hash"]
        if key not in by_config:
            by_config[key] = counted_flops(run_dir, record)
        write_record(run_dir, {**record, "flops": by_config[key]})  # write_record drops run_dir
        added += 1
        print(f"{run_dir}: {by_config[key]['train']:.4g} training FLOPs, {by_config[key]['eval']:.4g} to score")
    print(f"added FLOPs to {added} record(s) ({len(by_config)} configuration(s) replayed)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "flops",
        help="add training and scoring FLOPs to stored runs made before records kept them",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or folders of them (e.g. results/runs/x)")
    p.set_defaults(handler=cmd_flops)
