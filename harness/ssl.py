"""Shared parts of the label-free methods (SimCLR, BYOL, BMSSL): a backbone encoder scored on its
features, batches of unlabeled images, and view generators."""

from __future__ import annotations

import dataclasses

import torch

from harness.augment import make_views
from harness.method import EncoderMethod
from harness.samplers import sample_images

SCHEDULE_STEPS = 10_000  # training progress 0..1 in lightly's step units (its step-based schedules)


def env_view_generator(env, kind: str = "simclr", size: int = 0, **changes):
    """A view generator for a method's run (``env.views``: its ``views.*`` settings) at ``size`` px
    (0: the run's image size), with some settings ``changes``d."""
    view_cfg = dataclasses.replace(env.views, **changes)
    return make_views(view_cfg, env.channels, size or env.image_size, env.mean, env.std, kind)


class SelfSupervised(EncoderMethod):
    """Base for methods that learn an encoder without labels (they never receive any) from augmented
    views (the run's ``views.*`` settings). The default step: a batch of ``train.batch_size`` images, one
    batch of views from each of ``view_generators()``, then ``loss(views, progress)`` — on several
    processes, of this process's share of each batch of views (methods with ``splits = "images"``)."""

    uses_labels = False
    uses_views = True
    synced_batchnorm = True  # on several processes each takes a share of the batch's images

    def setup(self, data) -> None:
        self.views = self.view_generators()

    def view_generators(self) -> list:
        """One view generator per view a step uses (default: two alike)."""
        return [self.view_generator()] * 2

    def view_generator(self, kind: str = "simclr", size: int = 0, **changes):
        """A view generator for the run's ``views.*`` settings at ``size`` px (0: the run's image size);
        ``changes`` override some (e.g. BYOL's second view). ``kind`` names lightly's transform for
        ``views.views=lightly``."""
        return env_view_generator(self.env, kind, size, **changes)

    def training_step(self, data, step, progress, generator):
        images = self.image_batch(data, self.env.batch_size, generator)
        return self.loss([self.env.world.shard(views(images, generator)) for views in self.views], progress)

    def loss(self, views: list[torch.Tensor], progress: float) -> dict:
        """The loss (``loss``, and other scalars to log) of one batch of views per view generator."""
        raise NotImplementedError

    def image_batch(self, data, size: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` distinct unlabeled training images (uint8, on the data's device)."""
        return data.images[sample_images(len(data.images), size, generator).to(data.images.device)]
