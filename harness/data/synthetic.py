"""An embedded benchmark dataset: procedurally drawn glyphs, generated in-process from a seed.

Each class is a glyph of 2–4 cubic Bézier strokes; each instance redraws it with jittered control
points, a random affine distortion (rotation, anisotropic scale, shear, translation) and a random
pen width. Classes are split disjointly into train / val / test. Randomness comes from numpy's
Philox bit generator, whose stream is fixed by its algorithm, so the images are the same
everywhere. No files are read or written.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo

SPLIT_CLASSES = {"train": 160, "val": 32, "test": 64}
INSTANCES = 20
SIZE = 28
POINTS_PER_STROKE = 48
MAX_STROKES = 4


def _bezier(control: np.ndarray) -> np.ndarray:
    """control [..., 4, 2] → points [..., POINTS_PER_STROKE, 2] along the cubic curve."""
    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)[:, None]
    basis = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=-2)  # [P, 4, 1]
    return (control[..., None, :, :] * basis).sum(axis=-2)


@lru_cache(maxsize=2)
def generate(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All glyph images (uint8 [classes·INSTANCES, SIZE, SIZE]) and their class labels."""
    import torch

    rng = np.random.Generator(np.random.Philox(seed))
    n_classes = sum(SPLIT_CLASSES.values())
    n_strokes = 2 + (rng.random(n_classes) * 3).astype(int)  # 2, 3 or 4 strokes
    glyphs = 0.15 + 0.7 * rng.random((n_classes, MAX_STROKES, 4, 2))

    n = n_classes * INSTANCES
    labels = np.repeat(np.arange(n_classes), INSTANCES)
    u = rng.random((n, 9))
    control = glyphs[labels] + (rng.random((n, MAX_STROKES, 4, 2)) - 0.5) * 0.12
    angle = (u[:, 0] - 0.5) * np.deg2rad(30)
    sx, sy = 0.85 + 0.3 * u[:, 1], 0.85 + 0.3 * u[:, 2]
    shear = (u[:, 3] - 0.5) * 0.3
    shift = (u[:, 4:6] - 0.5) * 0.16
    width = 0.03 + 0.02 * u[:, 6]
    cos, sin = np.cos(angle), np.sin(angle)
    affine = np.stack([np.stack([cos * sx, -sin * sy + shear], -1), np.stack([sin * sx, cos * sy], -1)], -2)

    points = _bezier(control).reshape(n, MAX_STROKES * POINTS_PER_STROKE, 2) - 0.5
    points = np.einsum("nij,npj->npi", affine, points) + 0.5 + shift[:, None, :]
    drawn = (np.arange(MAX_STROKES)[None, :] < n_strokes[labels][:, None]).repeat(POINTS_PER_STROKE, axis=1)
    points[~drawn] = 1e3  # strokes a glyph does not have lie far outside the canvas

    grid = (np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="xy"), -1).reshape(-1, 2) + 0.5) / SIZE
    grid_t = torch.as_tensor(grid, dtype=torch.float32)
    images = np.empty((n, SIZE * SIZE), dtype=np.uint8)
    for start in range(0, n, 512):
        pts = torch.as_tensor(points[start : start + 512], dtype=torch.float32)
        d2 = torch.cdist(grid_t[None].expand(len(pts), -1, -1), pts).pow(2).amin(dim=-1)
        sigma = torch.as_tensor(width[start : start + 512], dtype=torch.float32)[:, None]
        ink = torch.exp(-d2 / (2 * sigma**2))
        images[start : start + 512] = (ink * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return images.reshape(n, SIZE, SIZE), labels


class SyntheticGlyphs(Dataset):
    """256 procedural glyph classes × 20 instances: 160 train, 32 validation, 64 test classes."""

    name = "synthetic-glyphs"
    description = "embedded procedural glyphs (no download): 160/32/64 classes × 20 distorted instances, 28 px"
    folder = "synthetic"
    cached = False
    splits = {s: SplitInfo(c, INSTANCES) for s, c in SPLIT_CLASSES.items()}
    native_size = SIZE
    mean, std = (0.1,), (0.25,)

    def read_split(self, raw: Path, split: str) -> RawSplit:
        images, labels = generate(0)
        first = 0
        for name, count in SPLIT_CLASSES.items():
            if name == split:
                break
            first += count
        keep = (labels >= first) & (labels < first + SPLIT_CLASSES[split])
        names = [f"glyph{c:03d}" for c in range(first, first + SPLIT_CLASSES[split])]
        return RawSplit(list(images[keep]), labels[keep] - first, names)
