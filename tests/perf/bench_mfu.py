"""Model FLOPs utilisation: each method's achieved training FLOP/s (the FLOPs its step counts, harness/compute.py,
times its measured steps/s) as a fraction of this machine's fp32 matrix-multiply peak, measured in the same run.

Run by hand (not collected by pytest):
  python tests/perf/bench_mfu.py [--bench omniglot-small1-20w1s-lake] [--methods simclr,maml] [--steps 5]

Kernels are pinned to the portable level first, as training pins them. The peak is the best of several
timed 1024×1024 ``torch.mm`` calls, taken before and after the methods (the larger counts). One JSON line
per method (FLOPs per step, steps/s, achieved GFLOP/s, ``mfu``), then one for the peak.
"""

from __future__ import annotations

import argparse
import json
import time

from harness import kernels

kernels.pin(kernels.level_pins("portable"))

import torch  # noqa: E402  (after the pin)

from harness import compute  # noqa: E402
from harness.methods import METHODS  # noqa: E402

from common import timed, training_step  # noqa: E402


def matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """The best fp32 FLOP/s of ``size``² matrix products on this machine."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def measure(name: str, bench: str, steps: int) -> tuple[int, float]:
    """(FLOPs of one training step, training steps per second) of ``name`` with its preset."""
    step = training_step(name, bench)
    with compute.counting() as count:
        step(0)
    return count.total, timed(lambda i: step(i + 1), steps, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="omniglot-small1-20w1s-lake")
    parser.add_argument(
        "--methods",
        default=",".join(e.name for e in METHODS if e.load().trains and not e.name.startswith("cactus")),
        help="comma-separated (default: every trained method; CACTUs' first phase is SimCLR's)",
    )
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    peak = matmul_peak()
    lines = []
    for name in args.methods.split(","):
        flops, rate = measure(name, args.bench, args.steps)
        lines.append(
            {
                "method": name,
                "flops_per_step": flops,
                "steps_per_s": round(rate, 3),
                "achieved_gflops": round(flops * rate / 1e9, 2),
            }
        )
    peak = max(peak, matmul_peak())
    for line in lines:
        print(json.dumps({**line, "mfu": round(line["achieved_gflops"] * 1e9 / peak, 3)}), flush=True)
    print(
        json.dumps(
            {
                "matmul_peak_gflops": round(peak / 1e9, 1),
                "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
