"""Reference row: Lake et al.'s Modified Hausdorff Distance baseline (``demo_classification.py`` of
the Omniglot repository). Each image becomes the coordinates of its ink pixels centred on their
mean; cost(A, B) = max(mean over A of the distance to the nearest point of B, and the reverse);
a query takes the class of its lowest-cost support image. Nothing is trained."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import KDTree

from harness.errors import ConfigError
from harness.method import Method


@dataclass
class MHDConfig:
    """Pixels above ``ink_threshold`` (0–255, ink intensity) are ink points."""

    ink_threshold: int = 127


def ink_points(image: torch.Tensor, threshold: int) -> np.ndarray:
    """[1, H, W] uint8 ink image → [P, 2] float64 (row, col) of its ink pixels, centred on their mean."""
    points = torch.nonzero(image[0] > threshold).double().numpy()
    return points - points.mean(0, keepdims=True)


def modified_hausdorff(a: KDTree, b: KDTree) -> float:
    """MHD (Dubuisson & Jain 1994) of two point sets held in KD-trees (exact nearest distances)."""
    return max(b.query(a.data)[0].mean(), a.query(b.data)[0].mean())


class ModifiedHausdorff(Method):
    Config = MHDConfig
    trains = False
    default_head = "adapt"

    def __init__(self, cfg, env):
        super().__init__(cfg, env)
        if env.channels != 1:
            raise ConfigError(f"mhd needs single-channel ink images; this benchmark has {env.channels} channels")

    @torch.no_grad()
    def solve_episodes(self, support, support_labels, query, ways):
        logits = torch.full((len(query), query.shape[1], ways), -torch.inf, dtype=torch.float64)
        for e in range(len(query)):
            supports = [KDTree(ink_points(x, self.cfg.ink_threshold)) for x in support[e]]
            for m, image in enumerate(query[e]):
                q = KDTree(ink_points(image, self.cfg.ink_threshold))
                for s, tree in enumerate(supports):
                    cls = int(support_labels[e, s])
                    logits[e, m, cls] = max(logits[e, m, cls], -modified_hausdorff(q, tree))
        return logits
