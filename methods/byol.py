"""BYOL (Grill et al. 2020) on lightly: an online encoder + projection (``BYOLProjectionHead``) +
predictor (``BYOLPredictionHead``) regresses a momentum target network (harness/momentum.py: ``update_momentum`` with the
``cosine_schedule`` of the momentum from ``momentum_base`` to 1 over training progress); symmetric negative-cosine loss.
The two views differ as in BYOL: view 1 always blurred, view 2 rarely blurred and sometimes solarised."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least, probability
from harness.momentum import MomentumTargets
from harness.ssl import SelfSupervised


@dataclass
class BYOLConfig:
    """The networks and momentum; ``*_2`` are the second view's settings that differ from the first
    (the first: the run's ``views.*``, preset to lightly's BYOLView1Transform in ``presets/byol.yaml``)."""

    gaussian_blur_2: float = field(default=0.1, metadata=probability())
    solarization_prob_2: float = field(default=0.2, metadata=probability())
    backbone: str = "conv4"
    projection_hidden: int = field(default=1024, metadata=at_least(1))
    projection_dim: int = field(default=128, metadata=at_least(1))
    prediction_hidden: int = field(default=1024, metadata=at_least(1))
    momentum_base: float = field(default=0.99, metadata={"min": 0, "max": 1})


class BYOL(MomentumTargets, SelfSupervised):
    Config = BYOLConfig
    splits = "images"  # a per-image loss: the mean of the processes' means is the global mean
    momentum_pairs = (("encoder", "target_encoder"), ("projection", "target_projection"))

    def __init__(self, cfg: BYOLConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        self.projection = BYOLProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.prediction = BYOLPredictionHead(cfg.projection_dim, cfg.prediction_hidden, cfg.projection_dim)
        self.make_targets()
        self.criterion = NegativeCosineSimilarity()

    def view_generators(self):
        return [
            self.view_generator("byol1"),
            self.view_generator(
                "byol2", gaussian_blur=self.cfg.gaussian_blur_2, solarization_prob=self.cfg.solarization_prob_2
            ),
        ]

    def loss(self, views, progress):
        """Momentum update of the target, then the online network's loss on two batches of views."""
        m = self.update_targets(progress)
        views = torch.cat(views)
        p0, p1 = self.prediction(self.projection(self.encoder(views).flatten(1))).chunk(2)
        with torch.no_grad():
            z0, z1 = self.target_projection(self.target_encoder(views).flatten(1)).chunk(2)
        return {"loss": 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0)), "momentum": m}
