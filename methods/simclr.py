"""SimCLR (Chen et al. 2020) on lightly: two augmented views of each unlabeled image, a projection
MLP (``SimCLRProjectionHead``) and the NT-Xent loss (``NTXentLoss``); the encoder's features are
scored on the few-shot episodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least, positive
from harness.ssl import SelfSupervised


@dataclass
class SimCLRConfig:
    """The encoder, projection and loss temperature (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    temperature: float = field(default=0.5, metadata=positive())
    projection_hidden: int = field(default=512, metadata=at_least(1))
    projection_dim: int = field(default=128, metadata=at_least(1))


class SimCLR(SelfSupervised):
    Config = SimCLRConfig
    splits = "images"  # several processes: NT-Xent over the embeddings gathered from all of them

    def __init__(self, cfg: SimCLRConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.projection = SimCLRProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=env.world.size > 1)

    def loss(self, views, progress):
        """NT-Xent of two batches of views of the same images."""
        z = self.projection(self.encoder(torch.cat(views)).flatten(1))
        return {"loss": self.criterion(*z.chunk(2))}
