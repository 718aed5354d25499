"""Shared parts of the label-free methods (SimCLR, BYOL, BMSSL): a backbone encoder scored on its
features, batches of unlabeled images, and view generators."""

from __future__ import annotations

import dataclasses

import torch

from harness.augment import ViewConfig, make_views
from harness.backbones import build_backbone
from harness.catalog import BACKBONES
from harness.method import Method
from harness.samplers import sample_images


class SelfSupervised(Method):
    """Base for methods that learn an encoder without labels (they never receive any)."""

    uses_labels = False

    @classmethod
    def check_config(cls, run) -> None:
        BACKBONES.get(run.method.backbone)

    def __init__(self, cfg, env):
        super().__init__(cfg, env)
        self.encoder, self.feature_dim = build_backbone(cfg.backbone, env.channels, env.image_size)
        self.encoder.to(memory_format=torch.channels_last)

    def view_generator(self, kind: str = "simclr", **changes):
        """A view generator for this method's settings (``changes`` override some, e.g. BYOL's second view)."""
        view_cfg = ViewConfig(**{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(ViewConfig)})
        view_cfg = dataclasses.replace(view_cfg, **changes)
        return make_views(view_cfg, self.env.channels, self.env.image_size, self.env.mean, self.env.std, kind)

    def image_batch(self, data, size: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` distinct unlabeled training images (uint8, on the data's device)."""
        return data.images[sample_images(len(data.images), size, generator).to(data.images.device)]

    @torch.no_grad()
    def embed(self, images):
        return self.encoder(self.normalize(images)).flatten(1)
