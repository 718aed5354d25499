"""The augmented views (harness/augment.py) against lightly's transforms: the statistics of the harness's
batched views match lightly's per-image transforms, which remain an option (``views.views=lightly``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from harness.augment import TensorViews, lightly_transform
from harness.config import ViewConfig
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

SIZE, SAMPLES = 32, 1500


def paired_views(cfg: ViewConfig, image: np.ndarray):
    """The same image through our batched views and through lightly's transform, SAMPLES times each."""
    ours = TensorViews(cfg, 3, SIZE, (0, 0, 0), (1, 1, 1))(
        torch.from_numpy(image).permute(2, 0, 1)[None].expand(SAMPLES, -1, -1, -1).contiguous(),
        torch.Generator().manual_seed(0),
    )
    np.random.seed(0)
    torch.manual_seed(0)
    transform = lightly_transform(cfg, SIZE, (0, 0, 0), (1, 1, 1), "simclr")
    theirs = torch.stack([transform(Image.fromarray(image)) for _ in range(SAMPLES)])
    return ours, theirs


def test_crop_scale_matches_lightly():
    ramp = np.linspace(0, 255, SIZE)
    image = np.stack([np.tile(ramp, (SIZE, 1)), np.tile(ramp[:, None], (1, SIZE)), np.zeros((SIZE, SIZE))], -1).astype(
        np.uint8
    )
    cfg = ViewConfig(min_scale=0.2, hf_prob=0, cj_prob=0, random_gray_scale=0, gaussian_blur=0)
    ours, theirs = paired_views(cfg, image)

    def crop_area(views):  # the x and y ramps' ranges give the crop's width and height
        width = views[:, 0].amax((1, 2)) - views[:, 0].amin((1, 2))
        height = views[:, 1].amax((1, 2)) - views[:, 1].amin((1, 2))
        return (width * height).numpy()

    a, b = crop_area(ours), crop_area(theirs)
    assert abs(a.mean() - b.mean()) < 0.03
    assert np.allclose(np.percentile(a, [10, 50, 90]), np.percentile(b, [10, 50, 90]), atol=0.05)
    assert a.min() > 0.15  # nothing below min_scale (minus interpolation at the edges)


def test_brightness_jitter_matches_lightly():
    cfg = ViewConfig(
        min_scale=1.0, hf_prob=0, cj_prob=0.8, cj_contrast=0, cj_sat=0, cj_hue=0, random_gray_scale=0, gaussian_blur=0
    )
    ours, theirs = paired_views(cfg, np.full((SIZE, SIZE, 3), 128, np.uint8))
    a, b = ours.mean((1, 2, 3)).numpy(), theirs.mean((1, 2, 3)).numpy()
    assert abs(a.mean() - b.mean()) < 0.03 and abs(a.std() - b.std()) < 0.03
    untouched = lambda v: np.isclose(v, 128 / 255, atol=2e-3).mean()  # noqa: E731  (1 − cj_prob of them)
    assert abs(untouched(a) - 0.2) < 0.04 and abs(untouched(b) - 0.2) < 0.04


def test_lightly_views_are_available_as_an_option():
    resolved = resolve("simclr", "synthetic-5w1s", sets=["train.batch_size=16", "views.views=lightly"])
    method = build_method(resolved, 0, torch.device("cpu"))
    train = TrainData(resolved.benchmark.load(resolved.config).train.images, None, None)
    method.setup(train)
    assert method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))["loss"] > 0
