"""ProtoNet on miniImageNet 5-way 1-shot at the paper's training length, on a GPU, in one command:

    python tests/perf/gpu_protonet_miniimagenet.py [--episodes 40000] [--seed 0] [--runs-dir runs] [--dry-run]

Snell et al. (2017, §3.2) train 30-way 1-shot episodes with 15 queries per class, Adam at 1e-3 halved every
2,000 episodes, "until validation loss stops improving" (the length is not stated; the harness's preset takes
40,000 episodes, 20 halvings of their schedule); they report 49.42 ± 0.78% over 600 test episodes. This runs
`harness run --method protonet --bench miniimagenet-5w1s` with those episodes under bf16 autocast, on CUDA, with
the training split on the device (the runner moves it there) and channels-last activations (the harness's
normalisation), and scores the benchmark's 600 fixed test episodes. The data must be prepared first
(`harness data prepare miniimagenet --from DIR`; README, Data).

Before it starts it prints the expected time per 1,000 episodes, from the FLOPs of one episode (counted by
torch's FlopCounterMode on the real step, as every record counts them) and the GPU's dense bf16 peak at an
assumed model-FLOPs utilisation (``--mfu``, default 0.15: Conv-4 at 84 px is too small to fill a GPU). It is an
estimate from FLOPs alone, so a lower bound: an episode's many small kernels also cost launch time (no GPU was
at hand when this was written; `tests/perf/bench_gpu.py` measures steps per second).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

# dense bf16 tensor-core peaks (TFLOP/s, without sparsity) of common data-centre GPUs, by name fragment
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def episode_flops() -> int:
    """FLOPs of one training episode of the run this script makes (shapes only: counted on the CPU)."""
    import torch

    from harness import compute
    from harness.method import TrainData
    from harness.optim import Optimization
    from harness.resolve import resolve
    from harness.runner import build_method

    resolved = resolve("protonet", "miniimagenet-5w1s")
    method = build_method(resolved, 0, torch.device("cpu"))
    ways, per_class = method.ways, method.shots + method.cfg.train_queries
    images = torch.zeros(ways * per_class, 3, 84, 84, dtype=torch.uint8)  # the step's shapes, not the data
    data = TrainData(images, torch.arange(ways).repeat_interleave(per_class), ways)
    method.setup(data)
    optimization = Optimization(method.parameter_groups(), resolved.config.train, torch.device("cpu"))
    with compute.counting() as count:
        optimization.step(method.training_step(data, 0, 0.0, torch.Generator().manual_seed(0)))
    return count.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40000, help="training episodes (steps of one episode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--mfu", type=float, default=0.15, help="assumed model-FLOPs utilisation for the estimate")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate and the command; run nothing")
    args = parser.parse_args()
    flops = episode_flops()
    print(f"one training episode: {flops / 1e9:.1f} GFLOP (30-way, 1 shot + 15 queries per class, 84 px)")
    for name, peak in PEAKS.items():
        seconds = 1000 * flops / (peak * 1e12 * args.mfu)
        print(f"  {name:5}: about {seconds:.1f} s per 1,000 episodes at {args.mfu:.0%} of {peak:g} TFLOP/s (bf16), "
              f"{seconds * args.episodes / 1000 / 60:.1f} min for {args.episodes:,}")  # fmt: skip
    command = [
        sys.executable, "-m", "harness.cli", "run", "--method", "protonet", "--bench", "miniimagenet-5w1s",
        "--seed", str(args.seed), "--device", "cuda", "--runs-dir", args.runs_dir, "--no-download",
        "--set", f"train.steps={args.episodes}", "--set", "train.precision=bf16",
    ]  # fmt: skip
    print(" ".join(command))
    if not args.dry_run:
        sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
