"""Reports over many records: `harness table`, `verify`, `leaderboard` and `load_runs` on stores of synthetic
records (100, 1,000, 5,000 by default), each timed as a user runs it (a fresh process, start-up included).

Run by hand on a quiet machine:

    python tests/perf/bench_store.py [--sizes 100,1000,5000] [--repeats 2]

Each store holds ``size`` ok runs of ProtoNet on synthetic-5w1s written as `harness run` writes them (a
config.yaml whose hash is the record's, result.json, trials.npy, episodes.csv, train_log.csv): 25
configurations (train.lr) × size/25 seeds, 100 episodes of 10 queries each. Each command runs twice: the
first reads every file (and builds the index), the second uses the index. Prints one JSON line per command
and size, then a table of seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

CONFIGS = 25
EPISODES, QUERIES = 100, 10
BENCH = "synthetic-5w1s"


def write_store(runs: Path, size: int) -> Path:
    from harness.settings import stored_hash
    from harness.store import write_config, write_record, write_scores

    rng = np.random.default_rng(0)
    for index in range(size):
        config, seed = index % CONFIGS, index // CONFIGS
        tree = {
            "method_name": "protonet",
            "benchmark": BENCH,
            "bench": {"ways": 5, "shots": 1, "queries": QUERIES // 5, "episodes": EPISODES, "episode_seed": 0},
            "data": {"train_fraction": 1.0, "image_size": 28},
            "train": {"steps": 100, "lr": 0.0001 * (config + 1)},
            "eval": {"head": "prototype"},
            "method": {},
        }
        digest = stored_hash(tree)
        run_id = f"20260101-000000-protonet-{BENCH}-s{seed}-{digest[:8]}-{index:04x}"[-80:]
        run_dir = runs / run_id
        write_config(run_dir, tree)
        correct = rng.random((EPISODES, QUERIES)) < 0.5 + 0.01 * config
        write_scores(run_dir, correct.mean(axis=1), correct)
        (run_dir / "train_log.csv").write_text(
            "step,seconds,lr,loss,val_accuracy\n50,1.0,0.001,1.5,\n100,2.0,0.0,1.2,\n"
        )
        write_record(
            run_dir,
            {
                "run_id": run_id, "kind": "train", "method": "protonet", "benchmark": BENCH, "trained_on": BENCH,
                "seed": seed, "config_hash": digest, "head": "prototype", "distance": "euclidean", "status": "ok",
                "reason": None, "started": "2026-01-01T00:00:00+00:00", "finished": f"2026-01-01T00:{index % 60:02d}:00+00:00",
                "steps": 100, "train_seconds": 2.0, "accuracy": float(correct.mean()), "error": float(1 - correct.mean()),
                "ci95": 0.01, "episodes": EPISODES, "queries_per_episode": QUERIES, "episode_digest": "synthetic",
                "eval_seconds": 0.1, "git": {"commit": "0" * 40, "dirty": False},
            },
        )  # fmt: skip
    return runs


def write_spec(folder: Path, runs: Path) -> Path:
    rows = [{"label": f"lr{c}", "method": "protonet", "where": {"train.lr": 0.0001 * (c + 1)}} for c in range(CONFIGS)]
    spec = {
        "title": "store benchmark",
        "evidence": str(runs),
        "seeds": 0,
        "columns": [{"label": "5-way 1-shot", "benchmark": BENCH}],
        "rows": rows,
        "outputs": {"md": "bench.md", "csv": "bench.csv"},
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command (the first builds the index)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in map(int, args.sizes.split(",")):
            runs = write_store(Path(scratch) / f"runs-{size}", size)
            spec = write_spec(Path(scratch), runs)
            harness = [sys.executable, "-m", "harness.cli"]
            commands = {
                "table": [*harness, "table", str(spec)],
                "verify": [*harness, "verify", str(spec)],
                "leaderboard": [*harness, "leaderboard", "--runs-dir", str(runs), "--format", "csv"],
                "load_runs": [sys.executable, "-c", f"import harness; print(len(harness.load_runs({str(runs)!r})))"],
            }
            for name, command in commands.items():
                seconds = [round(timed(command), 2) for _ in range(args.repeats)]
                line = {"command": name, "records": size, "seconds": seconds}
                results.append(line)
                print(json.dumps(line), flush=True)
    print(f"{'command':12} " + " ".join(f"{s:>14}" for s in args.sizes.split(",")))
    for name in ("table", "verify", "leaderboard", "load_runs"):
        cells = [r["seconds"] for r in results if r["command"] == name]
        print(f"{name:12} " + " ".join(f"{' / '.join(map(str, c)):>14}" for c in cells))


if __name__ == "__main__":
    main()
