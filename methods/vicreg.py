"""VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning") on lightly: one encoder + 3-layer expander (``VICRegProjectionHead``) and
``VICRegLoss``: λ·invariance (mean squared distance of the two views' embeddings) + μ·variance (hinge
on each dimension's standard deviation, averaged over the two views as the authors' code does) +
ν·covariance (squared off-diagonal covariances / d, summed over the two views)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least, positive
from harness.ssl import SelfSupervised


@dataclass
class VICRegConfig:
    """The expander and the three weights (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=8192, metadata=at_least(1))
    projection_dim: int = field(default=8192, metadata=at_least(1))
    invariance_weight: float = field(default=25.0, metadata=at_least(0))  # λ
    variance_weight: float = field(default=25.0, metadata=at_least(0))  # μ
    covariance_weight: float = field(default=1.0, metadata=at_least(0))  # ν
    eps: float = field(default=1e-4, metadata=positive())


class VICReg(SelfSupervised):
    Config = VICRegConfig

    def __init__(self, cfg: VICRegConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import VICRegLoss
        from lightly.models.modules.heads import VICRegProjectionHead  # not re-exported by lightly.models.modules

        self.projection = VICRegProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.criterion = VICRegLoss(
            lambda_param=cfg.invariance_weight,
            mu_param=cfg.variance_weight,
            nu_param=cfg.covariance_weight,
            eps=cfg.eps,
        )

    def loss(self, views, progress):
        """The VICReg objective of two batches of views of the same images."""
        z = self.projection(self.encoder(torch.cat(views)).flatten(1))
        return {"loss": self.criterion(*z.chunk(2))}
