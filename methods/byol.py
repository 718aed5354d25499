"""BYOL (Grill et al. 2020) on lightly: an online encoder + projection (``BYOLProjectionHead``) +
predictor (``BYOLPredictionHead``) regresses a momentum target network (``update_momentum`` with the
``cosine_schedule`` of the momentum from ``momentum_base`` to 1 over training progress); symmetric negative-cosine loss.
The two views differ as in BYOL: view 1 always blurred, view 2 rarely blurred and sometimes solarised."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from harness.config import at_least, probability
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


class BYOL(SelfSupervised):
    Config = BYOLConfig
    splits = "images"  # a per-image loss: the mean of the processes' means is the global mean

    def __init__(self, cfg: BYOLConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.projection = BYOLProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.prediction = BYOLPredictionHead(cfg.projection_dim, cfg.prediction_hidden, cfg.projection_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projection = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projection)
        self.criterion = NegativeCosineSimilarity()

    def view_generators(self):
        return [self.view_generator("byol1"),
                self.view_generator("byol2", gaussian_blur=self.cfg.gaussian_blur_2,
                                    solarization_prob=self.cfg.solarization_prob_2)]


    def momentum(self, progress: float) -> float:
        """τ from ``momentum_base`` to 1 along training progress (steps, or the time budget)."""
        from lightly.utils.scheduler import cosine_schedule

        return cosine_schedule(round(progress * 10_000), 10_001, self.cfg.momentum_base, 1.0)

    def loss(self, views, progress):
        """Momentum update of the target, then the online network's loss on two batches of views."""
        from lightly.models.utils import update_momentum

        m = self.momentum(progress)
        update_momentum(self.encoder, self.target_encoder, m)
        update_momentum(self.projection, self.target_projection, m)
        views = torch.cat(views)
        p0, p1 = self.prediction(self.projection(self.encoder(views).flatten(1))).chunk(2)
        with torch.no_grad():
            z0, z1 = self.target_projection(self.target_encoder(views).flatten(1)).chunk(2)
        return {"loss": 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0)), "momentum": m}
