"""How far a run on N processes drifts from the 1-process run, against how far the 1-process run drifts
from itself under a rounding-level change (torch's oneDNN convolutions switched off): the training loss's
relative difference at each step and the test accuracies. The numbers of results/README.md's "Several processes: how far they drift":

    python tests/perf/rounding_drift.py --method simclr --set train.batch_size=32 --set method.projection_hidden=64 \\
        --set method.projection_dim=32 --set train.optimizer=sgd --set train.lr=0.03 --set train.exact_batchnorm=true
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from harness.resolve import resolve
from harness.runner import RunRequest, execute, execute_processes
from harness.store import read_losses

COMMON = [
    "train.steps=20",
    "train.log_every=1",
    "train.checkpoint_every=1000",
    "bench.episodes=60",
    "train.val_episodes=10",
]


def drift(a: list[float], b: list[float]) -> list[float]:
    return [float(f"{abs(x - y) / abs(x):.1e}") for x, y in zip(a, b)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--bench", default="synthetic-5w1s")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    resolved = resolve(args.method, args.bench, sets=COMMON + args.sets)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: Path(tmp) / name for name in ("one", "no-onednn", "many")}
        one = execute(RunRequest(resolved, 0, runs["one"], device="cpu", progress=False))
        with torch.backends.mkldnn.flags(enabled=False):
            perturbed = execute(RunRequest(resolved, 0, runs["no-onednn"], device="cpu", progress=False))
        many = execute_processes(args.procs, RunRequest(resolved, 0, runs["many"], device="cpu", progress=False))
        reference = read_losses(runs["one"])
        print(
            json.dumps(
                {
                    "method": args.method,
                    "sets": args.sets,
                    "procs": args.procs,
                    "accuracy_pct": {
                        "1 process": round(100 * one["accuracy"], 2),
                        "1 process, oneDNN off": round(100 * perturbed["accuracy"], 2),
                        f"{args.procs} processes": round(100 * many["accuracy"], 2),
                    },
                    "relative_loss_drift": {
                        "oneDNN off": drift(reference, read_losses(runs["no-onednn"])),
                        f"{args.procs} processes": drift(reference, read_losses(runs["many"])),
                    },
                }
            )
        )


if __name__ == "__main__":
    main()
