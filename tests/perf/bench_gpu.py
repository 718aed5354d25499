"""Training speed of every method on CUDA in float32 and bfloat16: steps/s of the harness's own step
(the method's training step and the runner's optimisation), and the bf16 / fp32 ratio measured in the
same run. Needs a GPU:

    python tests/perf/bench_gpu.py --bench synthetic-5w1s --steps 20
"""

from __future__ import annotations

import argparse
import json

import torch

from harness.method import TrainData
from harness.methods import METHODS
from harness.optim import Optimization
from harness.resolve import resolve
from harness.runner import build_method

from common import timed


def steps_per_s(name: str, bench: str, precision: str, steps: int) -> float:
    device = torch.device("cuda")
    resolved = resolve(name, bench, sets=[f"train.precision={precision}"])
    method = build_method(resolved, 0, device)
    data = resolved.benchmark.load(resolved.config)
    labels = data.train.labels.to(device) if method.uses_labels else None
    train = TrainData(data.train.images.to(device), labels, data.train.num_classes if method.uses_labels else None)
    method.setup(train)
    optimization = Optimization(method.parameter_groups(), resolved.config.train, device)
    generator = torch.Generator().manual_seed(0)

    def step(i):
        with optimization.autocast():
            outputs = method.training_step(train, i, 0.0, generator)
        optimization.step(outputs)
        torch.cuda.synchronize()

    return timed(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="synthetic-5w1s")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--methods", help="comma-separated (default: every training method)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    names = args.methods.split(",") if args.methods else [e.name for e in METHODS if e.family != "reference"]
    for name in names:
        fp32, bf16 = (steps_per_s(name, args.bench, p, args.steps) for p in ("32", "bf16"))
        print(
            json.dumps(
                {
                    "method": name,
                    "device": torch.cuda.get_device_name(),
                    "fp32_steps_per_s": round(fp32, 2),
                    "bf16_steps_per_s": round(bf16, 2),
                    "bf16_over_fp32": round(bf16 / fp32, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
