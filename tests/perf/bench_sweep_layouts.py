"""Sweep throughput (runs per hour) of the worker layouts that fit this machine's cores:
one local worker with all the threads, or one worker per core with one thread each.

Run by hand on a quiet machine (no other sweep or benchmark on its cores):

    python tests/perf/bench_sweep_layouts.py [--rows bmssl,simclr,protonet,maml] [--layouts 1,2] [--scale 1]

Each layout runs the same sample of the Lake table's rung-1 runs (its rows' step caps, times ``--scale``; seed 0)
as `harness sweep --table` does, into a fresh runs directory, timing the whole sweep (`--wait`) as a user sees
it. Layouts alternate in order over ``--repeats`` so that a drift in the machine's speed does not favour one.
It prints one JSON line per sweep and the runs-per-hour ratio of each layout to the first, measured in this run.
Threads change rounding (records keep them), so the layouts' runs are not bit-identical to each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LAKE = Path(__file__).resolve().parents[2] / "results" / "tables" / "omniglot_lake.yaml"


def sample_spec(folder: Path, rows: list[str], scale: float) -> Path:
    """The Lake spec with only ``rows`` (their step caps × ``scale``), seed 0, no ladder, outputs in ``folder``."""
    spec = yaml.safe_load(LAKE.read_text())
    chosen = []
    for row in spec["rows"]:
        if row["label"] in rows:
            where = {
                k: (max(1, round(v * scale)) if k in ("train.steps", "method.encoder_steps") else v)
                for k, v in (row.get("where") or {}).items()
            }
            chosen.append({**row, "where": where})
    missing = set(rows) - {r["label"] for r in chosen}
    if missing:
        raise SystemExit(f"no rows {sorted(missing)} in {LAKE}")
    keep = ("title", "metric", "decimals", "test", "alpha", "columns")
    sample = {**{k: spec[k] for k in keep}, "seeds": "0", "rows": chosen, "evidence": "evidence"}
    path = folder / "tables" / "sample.yaml"
    path.parent.mkdir(parents=True)
    (folder / "tables" / "evidence").mkdir()
    path.write_text(yaml.safe_dump(sample, sort_keys=False))
    return path


def sweep_seconds(spec: Path, workers: int) -> float:
    runs = Path(tempfile.mkdtemp(prefix="layout-runs-"))
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "sweep",
                "--table",
                str(spec),
                "--executor",
                "local",
                "--parallelism",
                str(workers),
                "--runs-dir",
                str(runs),
                "--wait",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="bmssl,simclr,protonet,maml", help="Lake table rows to run")
    parser.add_argument("--layouts", default=f"1,{os.cpu_count() or 1}", help="worker counts to compare")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply each row's step caps (smoke tests: 0.05)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows, layouts = args.rows.split(","), [int(x) for x in args.layouts.split(",")]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="layouts-") as folder:
        spec = sample_spec(Path(folder), rows, args.scale)
        seconds: dict[int, list[float]] = {w: [] for w in layouts}
        for repeat in range(args.repeats):
            for workers in layouts if repeat % 2 == 0 else layouts[::-1]:
                took = sweep_seconds(spec, workers)
                seconds[workers].append(took)
                print(
                    json.dumps(
                        {
                            "workers": workers,
                            "threads_each": max(1, cores // workers),
                            "runs": len(rows),
                            "seconds": round(took, 1),
                            "runs_per_hour": round(len(rows) * 3600 / took, 2),
                        }
                    ),
                    flush=True,
                )
    base = sum(seconds[layouts[0]])
    for workers in layouts:
        print(json.dumps({"workers": workers, "runs_per_hour_vs_first": round(base / sum(seconds[workers]), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
