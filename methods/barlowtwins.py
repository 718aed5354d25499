"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction") on lightly: one encoder + 3-layer projector (``BarlowTwinsProjectionHead``); the
cross-correlation matrix of the two views' batch-normalised embeddings is pushed to the identity
(``BarlowTwinsLoss``: Σ(1 − C_ii)² + λ Σ_{i≠j} C_ij²)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least
from harness.ssl import SelfSupervised


@dataclass
class BarlowTwinsConfig:
    """The projector and the redundancy-reduction weight λ (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=8192, metadata=at_least(1))
    projection_dim: int = field(default=8192, metadata=at_least(1))
    lambda_offdiag: float = field(default=5e-3, metadata=at_least(0))


class BarlowTwins(SelfSupervised):
    Config = BarlowTwinsConfig

    def __init__(self, cfg: BarlowTwinsConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead

        self.projection = BarlowTwinsProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_offdiag)

    def loss(self, views, progress):
        """The Barlow Twins objective of two batches of views of the same images."""
        z = self.projection(self.encoder(torch.cat(views)).flatten(1))
        return {"loss": self.criterion(*z.chunk(2))}
