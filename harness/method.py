"""The method API: a base class every registered method extends.

A method declares its own ``Config`` dataclass (the ``method.*`` group), says whether it trains and
whether it may see labels, and implements what the shared runner and evaluation call:
``setup`` → ``training_step`` (repeated) → ``embed`` (frozen-encoder heads) or ``solve_episodes``
(the ``adapt`` head). The runner owns seeding, budgets, checkpoints, logging and records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from harness.config import RunConfig, TrainConfig


@dataclass
class MethodEnv:
    """What a method may know about its run: input shape and normalisation, device, budgets."""

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    train: TrainConfig
    run: RunConfig


@dataclass
class TrainData:
    """Training images (uint8 N×C×H×W, on the run's device); labels are None for label-free methods."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None


class Method(nn.Module):
    """Base class for methods. Subclasses set ``Config`` and override what they need."""

    Config: ClassVar[type]
    trains: ClassVar[bool] = True
    uses_labels: ClassVar[bool] = True
    default_head: ClassVar[str | None] = None  # None → the benchmark's head

    def __init__(self, cfg: Any, env: MethodEnv):
        super().__init__()
        self.cfg, self.env = cfg, env
        self.progress = 0.0  # set by the runner before each step: training progress 0..1 (steps or time budget)
        self.register_buffer("_mean", torch.tensor(env.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(env.std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def check_config(cls, run: RunConfig) -> None:
        """Raise ConfigError for settings that are valid one by one but not together."""

    # -------------------------------------------------------------- training
    def setup(self, data: TrainData) -> None:
        """Called once before training (after the method is on its device)."""

    def training_step(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step; returns scalars to log (must include ``loss``)."""
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers to checkpoint and schedule, by name."""
        return {}

    # -------------------------------------------------------------- evaluation
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → normalised float on the method's device, channels-last."""
        x = images.to(self._mean.device, non_blocking=True).float().div_(255)
        return ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → feature vectors (used by the prototype and logreg heads)."""
        raise NotImplementedError(f"{type(self).__name__} has no embedding; use --head adapt")

    def solve_episodes(self, support, support_labels, query, ways: int) -> torch.Tensor:
        """The ``adapt`` head: uint8 support [E, S, C, H, W] + labels, queries [E, M, ...] → logits [E, M, N].
        Called outside ``torch.no_grad`` so that methods can take gradient steps; others should disable grad."""
        raise NotImplementedError(f"{type(self).__name__} does not adapt per episode; use an embedding head")


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``train.optimizer`` names, with ``train.lr`` and ``train.weight_decay``."""
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=0.9, nesterov=True, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
