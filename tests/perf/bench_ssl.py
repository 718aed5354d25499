"""Speed of the harness's self-supervised steps (every method of family "self-supervised": simclr,
byol, moco, simsiam, barlowtwins, vicreg, ...) against a loop written the way lightly's examples are.

Run by hand (not collected by pytest):
  python tests/perf/bench_ssl.py [--bench omniglot-small1-20w1s-lake] [--methods simclr,moco]

Same data, backbone (the preset's, Conv-4), batch size and number of steps, measured in one run:
- the harness: ``Method.training_step`` (batched tensor views on the training device + the step);
- ``ref``: a torch ``DataLoader`` (2 workers) over a dataset applying lightly's two-view transform built
  from the run's ``views.*`` to each image — ``SimCLRTransform``, or ``BYOLTransform`` for BYOL (a method
  whose views differ in number or size gets one ``SimCLRViewTransform`` per view) — then the same step
  (``Method.loss`` and the runner's ``Optimization.step``) on its views;
- ``limit``: the same step on views already in memory (compute only).
One JSON line per method: steps/s of each, ``ratio`` = harness/ref, ``of_limit`` = harness/limit.
Targets: ratio ≥ 1.5 and of_limit ≥ 0.9.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from PIL import Image

from harness.config import ViewConfig
from harness.method import TrainData
from harness.optim import Optimization
from harness.resolve import resolve
from harness.runner import build_method

from common import report, timed


class PILImages(torch.utils.data.Dataset):
    """The training images as PIL images through a lightly multi-view transform (as lightly's examples)."""

    def __init__(self, images: torch.Tensor, transform):
        self.arrays = images.permute(0, 2, 3, 1).numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        a = self.arrays[i]
        return self.transform(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a))


def lightly_multiview(name: str, method):
    """lightly's own multi-view transform for the method, with the run's view settings."""
    from lightly.transforms import BYOLTransform, SimCLRTransform
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform
    from lightly.transforms.multi_view_transform import MultiViewTransform

    from harness.augment import lightly_transform

    cfg, env = method.cfg, method.env
    fields = {f: getattr(env.views, f) for f in ViewConfig.__dataclass_fields__ if f != "views"}
    common = dict(
        input_size=env.image_size,
        normalize={"mean": list(env.mean), "std": list(env.std)},
        rr_degrees=fields.pop("rr_degrees") or None,
        **fields,
    )
    if name == "byol":
        second = dict(common, gaussian_blur=cfg.gaussian_blur_2, solarization_prob=cfg.solarization_prob_2)
        return BYOLTransform(BYOLView1Transform(**common), BYOLView2Transform(**second))
    sizes = [getattr(views, "size", env.image_size) for views in method.views]
    if sizes != [env.image_size] * 2:  # multi-crop: one lightly view transform per view, at its settings and size
        return MultiViewTransform(
            [
                lightly_transform(getattr(views, "cfg", env.views), size, env.mean, env.std)
                for views, size in zip(method.views, sizes)
            ]
        )
    common.pop("solarization_prob")
    return SimCLRTransform(**common)


def self_supervised_methods() -> list[str]:
    """Every registered method of family "self-supervised"."""
    from harness.methods import METHODS

    return [name for name in METHODS.names() if METHODS.get(name).family == "self-supervised"]


def bench(name: str, bench_name: str, steps: int, batch: int, workers: int) -> dict:
    resolved = resolve(name, bench_name, sets=[f"train.batch_size={batch}"])
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, None, None)
    method.setup(train)
    optimization = Optimization(method.parameter_groups(), resolved.config.train)  # the runner's
    step = lambda *views: optimization.step(method.loss(list(views), 0.0))  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    harness_rate = timed(lambda i: optimization.step(method.training_step(train, i, 0.0, generator)), steps)

    loader = torch.utils.data.DataLoader(
        PILImages(data.train.images, lightly_multiview(name, method)),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    batches = itertools.cycle(loader)
    ref_rate = timed(lambda i: step(*(v.contiguous(memory_format=torch.channels_last) for v in next(batches))), steps)

    images = method.image_batch(train, batch, generator)
    views = [generate(images, generator) for generate in method.views]
    limit_rate = timed(lambda i: step(*views), steps)
    return report(name, harness_rate, ref_rate, limit_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="omniglot-small1-20w1s-lake")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--methods",
        default=",".join(self_supervised_methods()),
        help="comma-separated method names (default: every self-supervised method)",
    )
    args = parser.parse_args()
    for name in args.methods.split(","):
        bench(name.strip(), args.bench, args.steps, args.batch, args.workers)


if __name__ == "__main__":
    main()
