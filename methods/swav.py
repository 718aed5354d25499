"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments") on lightly: an encoder + projection MLP (``SwaVProjectionHead``), L2-normalised
features scored against prototypes (``SwaVPrototypes``, re-normalised to the unit sphere every step
and frozen for the first ``freeze_prototypes_fraction`` of training), codes from Sinkhorn-Knopp and
the swapped-prediction loss (``SwaVLoss``). Multi-crop (``small_crops`` low-resolution views besides
the two global ones) is optional; the feature queue is not implemented. As in Caron et al.'s code the
prototypes have no bias (lightly's ``SwaVPrototypes`` gives them one; it is removed here).

Also the multi-crop settings and views shared with DINO (``MultiCropConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.backbones import feature_dims
from harness.config import at_least, positive, probability
from harness.errors import ConfigError
from harness.ssl import SCHEDULE_STEPS, SelfSupervised

GLOBAL_VIEWS = 2  # the views at full resolution; the small crops follow them
SMALL_CROP_RATIO = 96 / 224  # both papers: 96 px small crops of 224 px images


@dataclass
class MultiCropConfig:
    """Multi-crop (Caron et al. 2020, §3.2): ``small_crops`` extra views at ``small_crop_size`` px
    (0: 96/224 of the image size) cropped from at least ``small_crop_min_scale`` of the image; the
    other view settings are the run's ``views.*``."""

    small_crops: int = field(default=0, metadata=at_least(0))
    small_crop_size: int = field(default=0, metadata=at_least(0))
    small_crop_min_scale: float = field(default=0.05, metadata={"gt": 0, "max": 1})


def small_crop_size(cfg: MultiCropConfig, image_size: int) -> int:
    return cfg.small_crop_size or max(1, round(image_size * SMALL_CROP_RATIO))


def check_small_crops(run, benchmark) -> None:
    """Small crops must give the backbone's features the size that the full views give (an
    unpooled Conv-4's depend on the input size); checked on torch's meta device (no memory, no RNG)."""
    cfg, image_size = run.method, run.data.image_size
    if not cfg.small_crops:
        return
    size = small_crop_size(cfg, image_size)
    try:
        full, small = feature_dims(cfg.backbone, benchmark.dataset.channels, image_size, (image_size, size))
    except RuntimeError as exc:
        raise ConfigError(
            f"method.small_crop_size={size}: too small for the {cfg.backbone} backbone "
            f"({str(exc).splitlines()[0]}); set a larger method.small_crop_size"
        ) from None
    if full != small:
        raise ConfigError(
            f"method.small_crop_size={size}: the {cfg.backbone} backbone gives {small}-d features at "
            f"{size} px but {full}-d at the image size ({image_size} px), and multi-crop needs one "
            f"feature size; pick a small_crop_size that keeps it, a pooled backbone (resnet12, "
            f"resnet18), or method.small_crops=0"
        )


class MultiCrop(SelfSupervised):
    """Views: ``global_view_generators()`` (two), then ``small_crops`` small ones."""

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        super().check_config(run, benchmark)
        check_small_crops(run, benchmark)

    def global_view_generators(self) -> list:
        return [self.view_generator()] * GLOBAL_VIEWS

    def view_generators(self) -> list:
        small = self.view_generator(
            size=small_crop_size(self.cfg, self.env.image_size), min_scale=self.cfg.small_crop_min_scale
        )
        return self.global_view_generators() + [small] * self.cfg.small_crops

    @staticmethod
    def per_view(network, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``network`` on the global views (one batch) and on the small crops (another): its outputs per view."""
        full = list(network(torch.cat(views[:GLOBAL_VIEWS])).chunk(GLOBAL_VIEWS))
        small = (
            list(network(torch.cat(views[GLOBAL_VIEWS:])).chunk(len(views) - GLOBAL_VIEWS))
            if len(views) > GLOBAL_VIEWS
            else []
        )
        return full, small


@dataclass
class SwAVConfig(MultiCropConfig):
    """The networks, Sinkhorn-Knopp and the prototypes' freezing (views: the run's ``views.*``); the
    defaults are Caron et al.'s (3000 prototypes, frozen for the first epoch: of 100, here)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=2048, metadata=at_least(1))
    projection_dim: int = field(default=128, metadata=at_least(1))
    prototypes: int = field(default=3000, metadata=at_least(1))
    temperature: float = field(default=0.1, metadata=positive())
    sinkhorn_iterations: int = field(default=3, metadata=at_least(1))
    sinkhorn_epsilon: float = field(default=0.05, metadata=positive())
    freeze_prototypes_fraction: float = field(default=0.01, metadata=probability())


class SwAV(MultiCrop):
    Config = SwAVConfig

    def __init__(self, cfg: SwAVConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        self.projection = SwaVProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        self.prototypes = SwaVPrototypes(
            cfg.projection_dim,
            cfg.prototypes,
            n_steps_frozen_prototypes=round(cfg.freeze_prototypes_fraction * SCHEDULE_STEPS),
        )
        for layer in self.prototypes.heads:
            layer.bias = None  # prototypes are unit vectors, scores their cosine with the features
        self.criterion = SwaVLoss(cfg.temperature, cfg.sinkhorn_iterations, cfg.sinkhorn_epsilon)

    def scores(self, views: torch.Tensor, progress: float) -> torch.Tensor:
        """Cosine similarities of the views' projected features with the prototypes."""
        z = F.normalize(self.projection(self.encoder(views).flatten(1)), dim=1)
        return self.prototypes(z, step=round(progress * SCHEDULE_STEPS))  # frozen (no grad) early in training

    def loss(self, views, progress):
        """Prototypes back on the unit sphere, then swapped prediction over the global views' codes."""
        self.prototypes.normalize()
        full, small = self.per_view(lambda x: self.scores(x, progress), views)
        return {"loss": self.criterion(full, small).squeeze(0)}
