"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning";
Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning") on lightly: a query encoder
+ 2-layer MLP head (``MoCoProjectionHead``), a momentum key encoder (harness/momentum.py: ``update_momentum`` with the
``cosine_schedule`` of the momentum from ``momentum_base`` to 1 over training progress, as lightly's
examples; the paper keeps it at 0.999) and InfoNCE against a queue of past keys (``NTXentLoss`` with
``memory_bank_size``). The queue is part of the method's state (in ``state_dict``, so in checkpoints),
so a resumed run continues with the same negatives. Batch norm is per device as in lightly's
single-device examples (the paper's shuffling BN is a multi-GPU measure)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.config import at_least, positive
from harness.momentum import MomentumTargets
from harness.ssl import SelfSupervised


@dataclass
class MoCoConfig:
    """The networks, queue, momentum and temperature (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=2048, metadata=at_least(1))
    projection_dim: int = field(default=128, metadata=at_least(1))
    queue_size: int = field(default=65536, metadata=at_least(1))
    temperature: float = field(default=0.2, metadata=positive())
    momentum_base: float = field(default=0.999, metadata={"min": 0, "max": 1})
    symmetric: bool = False  # also view 2 as queries against view 1's keys (both keys enqueued)


class MoCo(MomentumTargets, SelfSupervised):
    Config = MoCoConfig
    momentum_pairs = (("encoder", "key_encoder"), ("projection", "key_projection"))

    def __init__(self, cfg: MoCoConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead

        self.projection = MoCoProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.make_targets()
        self.criterion = NTXentLoss(temperature=cfg.temperature, memory_bank_size=(cfg.queue_size, cfg.projection_dim))
        queue = self.criterion.memory_bank  # lightly keeps it out of state_dict; checkpoints need it
        for name in ("bank", "bank_ptr"):
            queue.register_buffer(name, getattr(queue, name), persistent=True)

    def loss(self, views, progress):
        """Momentum update of the key encoder, then InfoNCE of the queries (view 1; both views when
        symmetric) against their keys (the other view) and the queue, which then takes the keys."""
        m = self.update_targets(progress)
        queries, keys = (views, views[::-1]) if self.cfg.symmetric else (views[:1], views[1:2])
        q = self.projection(self.encoder(torch.cat(queries)).flatten(1))
        with torch.no_grad():
            k = self.key_projection(self.key_encoder(torch.cat(keys)).flatten(1))
        return {"loss": self.criterion(q, k), "momentum": m}
