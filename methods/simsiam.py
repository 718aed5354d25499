"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning") on lightly: one
encoder + 3-layer projection MLP (``SimSiamProjectionHead``) + bottleneck predictor
(``SimSiamPredictionHead``); each view's prediction regresses the other view's projection under a
stop-gradient, symmetric negative-cosine loss (``NegativeCosineSimilarity``). No momentum encoder, no
negatives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least
from harness.ssl import SelfSupervised


@dataclass
class SimSiamConfig:
    """The projection and the predictor's bottleneck (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=2048, metadata=at_least(1))
    projection_dim: int = field(default=2048, metadata=at_least(1))
    prediction_hidden: int = field(default=512, metadata=at_least(1))


class SimSiam(SelfSupervised):
    Config = SimSiamConfig
    splits = "images"  # a per-image loss: the mean of the processes' means is the global mean

    def __init__(self, cfg: SimSiamConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        self.projection = SimSiamProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.prediction = SimSiamPredictionHead(cfg.projection_dim, cfg.prediction_hidden, cfg.projection_dim)
        self.criterion = NegativeCosineSimilarity()

    def loss(self, views, progress):
        """D(p1, sg(z2))/2 + D(p2, sg(z1))/2; ``z_std`` is the paper's collapse monitor (std of the
        L2-normalised projections per dimension: ≈ 1/√d when healthy, 0 when collapsed)."""
        z = self.projection(self.encoder(torch.cat(views)).flatten(1))
        p0, p1 = self.prediction(z).chunk(2)
        z0, z1 = z.detach().chunk(2)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return {"loss": loss, "z_std": torch.nn.functional.normalize(z0, dim=1).std(0).mean()}
