"""What the portable kernel pin costs: each method's training steps/s with its CPU kernels pinned to the
portable level (AVX2 on x86) against the same steps at the machine's native level (harness/kernels.py).

Run by hand (not collected by pytest):
  python tests/perf/bench_kernels.py [--methods simclr,bmssl] [--steps 10] [--repeats 2]

The two levels need two processes (the pins are read before torch computes), so each measurement is a
fresh process, run alternately (portable, native, portable, ...) to share any drift in the machine's
speed. One JSON line per method: the median steps/s of each level and ``ratio`` = portable / native.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

DEFAULT_METHODS = "simclr,byol,dino,bmssl,psco,protonet,maml"


def measure(method: str, bench: str, steps: int) -> float:
    """In this (fresh) process: the runner's training steps per second of ``method``."""
    from common import timed, training_step

    return timed(training_step(method, bench), steps)


def in_fresh_process(method: str, bench: str, steps: int, level: str) -> float:
    code = (
        f"import sys; sys.path.insert(0, 'tests/perf'); from harness import kernels; "
        f"kernels.pin(kernels.level_pins({level!r})); import bench_kernels; "
        f"print(bench_kernels.measure({method!r}, {bench!r}, {steps}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="omniglot-small1-20w1s-lake")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for method in args.methods.split(","):
        rates = {"portable": [], "native": []}
        for _ in range(args.repeats):
            for level in rates:
                rates[level].append(in_fresh_process(method, args.bench, args.steps, level))
        portable, native = statistics.median(rates["portable"]), statistics.median(rates["native"])
        print(
            json.dumps(
                {
                    "method": method,
                    "portable_steps_per_s": round(portable, 3),
                    "native_steps_per_s": round(native, 3),
                    "ratio": round(portable / native, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
