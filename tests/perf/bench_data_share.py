"""How much of a training step at 84 px is loading and augmenting its images, per method family, against the
step's own compute in the same run. Target: at most 10% for every family.

Run by hand on a quiet machine, with miniImageNet prepared (`harness data prepare miniimagenet --from DIR`):

    python tests/perf/bench_data_share.py [--bench miniimagenet-5w1s] [--steps 5] [--methods protonet,maml,...]

Each method's step is made as the runner makes it (its preset on the benchmark, the training split memory-mapped
from its decoded cache, the runner's optimisation) and timed whole; inside it, the time spent in the data path
is summed: indexing the memory-mapped images, the samplers, the view generators (augmentation) and the
normalisation into float (the outermost of nested calls only). Prints one JSON line per method (data and step
seconds, the share) and exits 1 if a share is above the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager

import torch

from harness import augment, method, samplers
from harness.optim import Optimization
from harness.resolve import resolve
from harness.runner import build_method, training_data

TARGET = 0.10
FAMILIES = "protonet,maml,umtra,simclr,psco,bmssl,supervised"  # meta-learning, label-free (three kinds), supervised


class Clock:
    """Seconds spent in the data path (outermost calls only)."""

    def __init__(self):
        self.seconds, self.depth = 0.0, 0

    @contextmanager
    def measuring(self):
        self.depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.seconds += time.perf_counter() - started

    def wrap(self, function):
        def timed(*args, **kwargs):
            with self.measuring():
                return function(*args, **kwargs)

        return timed


class TimedImages:
    """The training images, each indexing timed (what a method does with them: index, len, device)."""

    def __init__(self, images: torch.Tensor, clock: Clock):
        self.images, self.clock = images, clock
        self.device, self.shape, self.dtype = images.device, images.shape, images.dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        with self.clock.measuring():
            return self.images[index]


def patch(clock: Clock) -> None:
    """Time the data path's functions wherever the methods call them."""
    method.Method.normalize = clock.wrap(method.Method.normalize)
    for cls in (augment.TensorViews, augment.LightlyViews):
        cls.__call__ = clock.wrap(cls.__call__)
    samplers.EpisodeSampler.sample = clock.wrap(samplers.EpisodeSampler.sample)
    original, wrapped = samplers.sample_images, clock.wrap(samplers.sample_images)
    samplers.sample_images = wrapped  # for the modules imported from here on
    for module in [m for name, m in sys.modules.items() if name.startswith("harness.")]:  # and those before
        if getattr(module, "sample_images", None) is original:
            module.sample_images = wrapped


def measure(name: str, bench: str, steps: int, clock: Clock) -> dict:
    resolved = resolve(name, bench)
    device = torch.device("cpu")
    model = build_method(resolved, 0, device)
    data = training_data(model, resolved.benchmark.load(resolved.config, with_train=True))
    model.setup(data)
    data.images = TimedImages(data.images, clock)
    optimization = Optimization(model.parameter_groups(), resolved.config.train, device)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps + 1):  # the first is untimed: one-off work
        clock.seconds, started = 0.0, time.perf_counter()
        optimization.step(model.training_step(data, step, 0.0, generator))
        total = time.perf_counter() - started
        if step == 0:
            data_seconds, step_seconds = 0.0, 0.0
        else:
            data_seconds, step_seconds = data_seconds + clock.seconds, step_seconds + total
    return {
        "method": name,
        "bench": bench,
        "data_s_per_step": round(data_seconds / steps, 4),
        "step_s": round(step_seconds / steps, 3),
        "data_share": round(data_seconds / step_seconds, 4),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="miniimagenet-5w1s")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", default=FAMILIES)
    args = parser.parse_args()
    clock = Clock()
    patch(clock)
    lines = [measure(name, args.bench, args.steps, clock) for name in args.methods.split(",")]
    for line in lines:
        print(json.dumps({**line, "within_target": line["data_share"] <= TARGET}), flush=True)
    sys.exit(0 if all(line["data_share"] <= TARGET for line in lines) else 1)


if __name__ == "__main__":
    main()
