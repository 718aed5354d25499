"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers") on lightly:
a student (encoder + ``DINOProjectionHead``) matches a teacher, the student's momentum copy
(harness/momentum.py: ``update_momentum`` with the ``cosine_schedule`` of the momentum from ``momentum_base`` to 1 over
training progress), through ``DINOLoss``: cross-entropy between the teacher's centred, sharpened
softmax on the two global views and the student's on every other view (centre momentum 0.9; the
teacher temperature warms up linearly over the first ``teacher_temp_warmup_fraction`` of training).
The head's last layer is frozen for the first ``freeze_last_layer_fraction`` (lightly's
``freeze_last_layer``). The global views differ as in BYOL (view 1 blurred, view 2 rarely blurred and
sometimes solarised); optional small crops (multi-crop) are seen only by the student. The loss's centre
is a buffer of the method (``criterion.center``): it is checkpointed, so a resumed run is exact."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from harness.config import at_least, positive, probability
from harness.methods.swav import GLOBAL_VIEWS, MultiCrop, MultiCropConfig
from harness.momentum import MomentumTargets


@dataclass
class DINOConfig(MultiCropConfig):
    """The networks, temperatures and momenta; ``*_2`` are the second global view's settings that
    differ from the first (the run's ``views.*``), as in ``BYOLConfig``. The defaults are Caron et al.'s
    (τt warmed up over the first 30 epochs and the last layer frozen for the first, of 100 here)."""

    gaussian_blur_2: float = field(default=0.1, metadata=probability())
    solarization_prob_2: float = field(default=0.2, metadata=probability())
    backbone: str = "conv4"
    hidden_dim: int = field(default=2048, metadata=at_least(1))
    bottleneck_dim: int = field(default=256, metadata=at_least(1))
    output_dim: int = field(default=65536, metadata=at_least(1))
    momentum_base: float = field(default=0.996, metadata={"min": 0, "max": 1})
    student_temp: float = field(default=0.1, metadata=positive())
    warmup_teacher_temp: float = field(default=0.04, metadata=positive())
    teacher_temp: float = field(default=0.07, metadata=positive())
    teacher_temp_warmup_fraction: float = field(default=0.3, metadata=probability())
    center_momentum: float = field(default=0.9, metadata=probability())
    freeze_last_layer_fraction: float = field(default=0.01, metadata=probability())


def dino_head(feature_dim: int, cfg: DINOConfig):
    from lightly.models.modules import DINOProjectionHead

    with warnings.catch_warnings():  # lightly's head uses torch.nn.utils.weight_norm, deprecated by torch
        warnings.filterwarnings("ignore", message=".*weight_norm", category=FutureWarning)
        return DINOProjectionHead(feature_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.output_dim)


class DINO(MomentumTargets, MultiCrop):
    Config = DINOConfig
    momentum_pairs = (("encoder", "teacher_encoder"), ("head", "teacher_head"))

    def __init__(self, cfg: DINOConfig, env):
        super().__init__(cfg, env)
        from lightly.loss import DINOLoss

        self.head = dino_head(self.feature_dim, cfg)
        self.make_targets()
        self.criterion = DINOLoss(
            cfg.output_dim,
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )

    def global_view_generators(self):
        return [
            self.view_generator("byol1"),
            self.view_generator(
                "byol2", gaussian_blur=self.cfg.gaussian_blur_2, solarization_prob=self.cfg.solarization_prob_2
            ),
        ]

    def target_copy(self, online):
        if online is not self.head:
            return super().target_copy(online)
        teacher = dino_head(self.feature_dim, self.cfg)  # weight norm cannot be deep-copied: load the student
        teacher.load_state_dict(online.state_dict())
        return teacher

    def teacher_temperature(self, progress: float) -> float:
        """Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up, then constant."""
        cfg = self.cfg
        ramp = min(1.0, progress / cfg.teacher_temp_warmup_fraction) if cfg.teacher_temp_warmup_fraction else 1.0
        return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * ramp

    def loss(self, views, progress):
        """Momentum update of the teacher, then the student's loss on all views against the teacher's on the global two."""
        m = self.update_targets(progress)
        # lightly's freeze_last_layer: no gradient, so the runner's optimiser leaves the last layer as it is
        # (its directions weight_v; its norms weight_g stay 1, lightly's norm_last_layer)
        self.head.last_layer.weight_v.requires_grad_(progress >= self.cfg.freeze_last_layer_fraction)
        full, small = self.per_view(lambda x: self.head(self.encoder(x).flatten(1)), views)
        with torch.no_grad():
            teacher = list(
                self.teacher_head(self.teacher_encoder(torch.cat(views[:GLOBAL_VIEWS])).flatten(1)).chunk(GLOBAL_VIEWS)
            )
        temperature = self.teacher_temperature(progress)
        loss = self.criterion(teacher, full + small, teacher_temp=temperature)
        return {"loss": loss, "momentum": m, "teacher_temp": temperature}
