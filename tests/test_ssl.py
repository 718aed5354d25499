"""SimCLR and BYOL on lightly: losses, momentum, label-free training, view statistics vs lightly's
transforms, and a short run that beats raw pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.augment import TensorViews, lightly_transform
from harness.config import ViewConfig
from harness.method import TrainData
from harness.resolve import resolve
from harness.runner import build_method

from conftest import run_cli, train_with_permuted_labels


def test_ntxent_prefers_matching_views():
    from lightly.loss import NTXentLoss

    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    other = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    criterion = NTXentLoss(temperature=0.5)
    assert criterion(z, z + 0.01 * other) < criterion(z, other) - 1.0


def test_byol_loss_prefers_matching_views():
    from lightly.loss import NegativeCosineSimilarity

    criterion = NegativeCosineSimilarity()
    p = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    assert criterion(p, p).item() == pytest.approx(-1.0)
    assert criterion(p, p) < criterion(p, z) - 0.5


def ssl_method(name: str, *sets: str):
    resolved = resolve(name, "synthetic-5w1s", sets=["train.batch_size=16", *sets])
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, None, None)
    method.setup(train)
    return method, train


def test_byol_momentum_schedule_and_update():
    method, train = ssl_method("byol", "method.momentum_base=0.9")
    assert method.momentum(0.0) == pytest.approx(0.9) and method.momentum(1.0) == pytest.approx(1.0)
    m = method.momentum(0.25)  # cosine from 0.9 at the start to 1 at the end of training
    assert m == pytest.approx(1 - 0.1 * (np.cos(np.pi * 0.25) + 1) / 2, rel=1e-4)
    target = [p.detach().clone() for p in method.target_encoder.parameters()]
    with torch.no_grad():  # make online and target differ before the update
        for p in method.encoder.parameters():
            p.add_(0.1)
    online = [p.detach().clone() for p in method.encoder.parameters()]
    method.training_step(train, 50, 0.25, torch.Generator().manual_seed(0))
    for o, t, new in zip(online, target, method.target_encoder.parameters()):
        assert torch.allclose(new, m * t + (1 - m) * o, atol=1e-6)
    assert all(not p.requires_grad for p in method.target_encoder.parameters())


@pytest.mark.parametrize("name", ["simclr", "byol", "bmssl"])
def test_training_never_sees_labels(name, tmp_path, monkeypatch):
    """The method gets no labels; permuting the training labels changes nothing."""
    sets = ["train.steps=3", "train.batch_size=8", "bench.episodes=20"]
    if name == "bmssl":
        sets += ["method.ways=4", "train.batch_size=2"]
    seen, same = train_with_permuted_labels(resolve(name, "synthetic-5w1s", sets=sets), tmp_path, monkeypatch)
    assert seen == [None, None] and same


SIZE, SAMPLES = 32, 1500


def paired_views(cfg: ViewConfig, image: np.ndarray):
    """The same image through our batched views and through lightly's transform, SAMPLES times each."""
    ours = TensorViews(cfg, 3, SIZE, (0, 0, 0), (1, 1, 1))(
        torch.from_numpy(image).permute(2, 0, 1)[None].expand(SAMPLES, -1, -1, -1).contiguous(),
        torch.Generator().manual_seed(0))
    np.random.seed(0)
    torch.manual_seed(0)
    transform = lightly_transform(cfg, SIZE, (0, 0, 0), (1, 1, 1), "simclr")
    theirs = torch.stack([transform(Image.fromarray(image)) for _ in range(SAMPLES)])
    return ours, theirs


def test_crop_scale_matches_lightly():
    ramp = np.linspace(0, 255, SIZE)
    image = np.stack([np.tile(ramp, (SIZE, 1)), np.tile(ramp[:, None], (1, SIZE)), np.zeros((SIZE, SIZE))], -1).astype(np.uint8)
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
    cfg = ViewConfig(min_scale=1.0, hf_prob=0, cj_prob=0.8, cj_contrast=0, cj_sat=0, cj_hue=0,
                     random_gray_scale=0, gaussian_blur=0)
    ours, theirs = paired_views(cfg, np.full((SIZE, SIZE, 3), 128, np.uint8))
    a, b = ours.mean((1, 2, 3)).numpy(), theirs.mean((1, 2, 3)).numpy()
    assert abs(a.mean() - b.mean()) < 0.03 and abs(a.std() - b.std()) < 0.03
    untouched = lambda v: np.isclose(v, 128 / 255, atol=2e-3).mean()  # noqa: E731  (1 − cj_prob of them)
    assert abs(untouched(a) - 0.2) < 0.04 and abs(untouched(b) - 0.2) < 0.04


def test_lightly_views_are_available_as_an_option():
    method, train = ssl_method("simclr", "views.views=lightly")
    assert method.training_step(train, 0, 0.0, torch.Generator().manual_seed(0))["loss"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method, sets", [
    ("simclr", ["train.steps=100", "train.batch_size=64"]),
    ("byol", ["train.steps=100", "train.batch_size=64"]),
    ("bmssl", ["train.steps=50", "train.batch_size=2"]),
])
def test_short_training_beats_raw_pixels(method, sets, runs_dir):
    common = ["--bench", "synthetic-5w1s", "--set", "bench.episodes=300", "--runs-dir", runs_dir, "--no-progress"]
    assert run_cli("run", "--method", "pixels", *common) == 0
    assert run_cli("run", "--method", method, *[a for s in sets for a in ("--set", s)], *common) == 0
    from harness.store import RunStore

    pixels, trained = sorted(list(RunStore(runs_dir)), key=lambda r: r["method"] != "pixels")
    assert pixels["episode_digest"] == trained["episode_digest"]
    assert trained["accuracy"] > pixels["accuracy"] + 0.03, (trained["accuracy"], pixels["accuracy"])
