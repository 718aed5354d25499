"""UMTRA: Unsupervised Meta-learning with Tasks constructed by Random sampling and Augmentation
(Khodadadeh, Bölöni & Shah, NeurIPS 2019), on learn2learn's MAML.

A training task is ``bench.ways`` (N) random unlabeled images, each its own class: the support set
is the image itself (one shot; ``augment_support`` takes a view of it instead) and the queries are
``train_queries`` augmentations of it (the run's ``views.*``: the paper used random pixel
zeroing and shifts on Omniglot and AutoAugment on miniImageNet). N random images out of thousands
rarely share a class, which is the paper's argument for why such tasks approximate labelled ones.
The tasks are then solved exactly as ``maml`` solves labelled ones (``methods/maml.py``: MAML's
inner loop on the whole network, second order unless ``first_order``, ``adapt=head`` for ANIL),
and scored the same way (the ``adapt`` head). No label is used (the runner gives this method none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import ConfigError
from harness.methods.maml import MAML, MAMLConfig
from harness.samplers import sample_images
from harness.ssl import env_view_generator


@dataclass
class UMTRAConfig(MAMLConfig):
    """MAML's settings (``train_shots`` is unused: one shot, the image); ``train_queries``
    augmentations per image are its queries."""

    augment_support: bool = False  # support = a view of the image instead of the image itself


class UMTRA(MAML):
    Config = UMTRAConfig
    uses_labels = False
    uses_views = True

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        if run.method.train_shots not in (0, 1):
            raise ConfigError(
                f"method.train_shots={run.method.train_shots}: UMTRA's tasks have one shot, the image "
                f"itself; leave method.train_shots at 0"
            )

    def setup(self, data) -> None:
        needed = self.env.batch_size * self.ways
        if len(data.images) < needed:
            raise ConfigError(
                f"UMTRA needs {needed} distinct training images per step (train.batch_size="
                f"{self.env.batch_size} tasks × {self.ways} ways), the training set has "
                f"{len(data.images)}; lower train.batch_size"
            )
        self.views = env_view_generator(self.env)

    def make_tasks(self, data, generator: torch.Generator):
        """(support [B, N, C, H, W], labels [B, N], queries [B, N·Q, C, H, W], labels [B, N·Q]), normalised,
        from B·N distinct unlabeled images; class n of a task is its n-th image."""
        batch, ways, queries = self.env.batch_size, self.ways, self.cfg.train_queries
        images = data.images[sample_images(len(data.images), batch * ways, generator).to(data.images.device)]
        support = self.views(images, generator) if self.cfg.augment_support else self.normalize(images)
        query = self.views(images.repeat_interleave(queries, dim=0), generator)
        labels = torch.arange(ways, device=support.device)
        return (
            support.unflatten(0, (batch, ways)),
            labels.expand(batch, -1),
            query.unflatten(0, (batch, ways * queries)),
            labels.repeat_interleave(queries).expand(batch, -1),
        )

    def training_step(self, data, step, progress, generator):
        return self.loss(*(self.env.world.shard(t) for t in self.make_tasks(data, generator)))
