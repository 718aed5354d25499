"""The method API: a base class every registered method extends.

A method declares its own ``Config`` dataclass (the ``method.*`` group), says whether it trains and
whether it may see labels, and implements what the shared runner and evaluation call:
``setup`` → ``parameter_groups`` → ``training_step`` (repeated: returns the loss) → ``embed``
(frozen-encoder heads) or ``solve_episodes`` (the ``adapt`` head). ``EncoderMethod`` is the base of
those scored on a backbone's features (the self-supervised methods, ProtoNet, supervised). The runner owns optimisation
(``harness.optim``: optimisers, zeroing, backward, clipping, stepping, the schedule), seeding, budgets,
checkpoints, logging and records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from harness.backbones import build_backbone
from harness.config import RunConfig, ViewConfig
from harness.distributed import SINGLE, World
from harness.errors import ConfigError
from harness.protocol import Benchmark


def check_shares(key: str, total: int, procs: int) -> None:
    if total % procs:
        raise ConfigError(
            f"{key}={total} does not split into {procs} equal shares (one per process); use a "
            f"{key} divisible by {procs}, or another --procs"
        )


@dataclass
class MethodEnv:
    """What a method may know about its run: input shape and normalisation, device, the benchmark's
    ways and shots, and ``batch_size`` (``train.batch_size``: images, or tasks per meta-batch)."""

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    ways: int
    shots: int
    batch_size: int
    views: ViewConfig | None = None  # the run's views.* settings, for methods that use views
    world: World = SINGLE  # the processes this run is split over (harness/distributed.py)


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
    uses_views: ClassVar[bool] = False  # learns from augmented views: has the views.* group
    default_head: ClassVar[str | None] = None  # None → the benchmark's head
    # On several processes (--procs): what each process takes its share of ("images" of a batch,
    # "tasks" of a meta-batch; "" → one process only), and whether batch norm then spans the shards.
    splits: ClassVar[str] = ""
    synced_batchnorm: ClassVar[bool] = False
    # Set by the runner before each training step: True on the steps whose scalars it logs, where a method
    # may also report costlier diagnostics (BMSSL's gradient ratio); the loss itself must not depend on it.
    diagnose: bool = False
    # Logged scalars that measure the method's own mechanisms: their medians go into the record (mechanisms.py).
    mechanisms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, env: MethodEnv):
        super().__init__()
        self.cfg, self.env = cfg, env
        self.register_buffer("_mean", torch.tensor(env.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(env.std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def check_config(cls, run: RunConfig, benchmark: Benchmark) -> None:
        """Raise ConfigError for settings that are valid one by one, or on this benchmark, but not together."""

    @classmethod
    def check_world(cls, run: RunConfig, procs: int) -> None:
        """Raise ConfigError if this run cannot be split over ``procs`` processes (default: the global
        batch, ``train.batch_size`` images or tasks, must split into equal shares)."""
        check_shares("train.batch_size", run.train.batch_size, procs)

    # -------------------------------------------------------------- training
    def setup(self, data: TrainData) -> None:
        """Called once before training (after the method is on its device)."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters the runner optimises, by optimiser name (one optimiser each). Default: one
        optimiser for every parameter that requires a gradient (momentum targets switch theirs off)."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    @classmethod
    def mechanism_floors(cls, cfg: Any) -> dict[str, float]:
        """Logged scalars → the median (over the second half of a run) below which the mechanism they measure
        is inert under the settings ``cfg``: the run's record and report then warn (none by default)."""
        return {}

    @classmethod
    def phase_starts(cls, cfg: Any) -> list[int]:
        """The steps where the training step changes kind (CACTUs: embedding, then meta-training), for the
        method's settings ``cfg``; the runner counts the FLOPs of each phase's first steps (harness/compute.py)."""
        return [0]

    def training_step(self, data: TrainData, step: int, progress: float, generator: torch.Generator) -> dict:
        """The loss of one step (``loss``, a tensor the runner back-propagates) and other scalars to log.
        ``progress`` is how far training is, 0..1 (by steps, or by the time budget)."""
        raise NotImplementedError(f"{type(self).__name__} does not train")

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


class EncoderMethod(Method):
    """Base for methods scored on a backbone's features: ``encoder`` (``cfg.backbone``, channels-last)
    with ``feature_dim``-d outputs, and ``embed`` = its flattened features of the normalised images."""

    def __init__(self, cfg: Any, env: MethodEnv):
        super().__init__(cfg, env)
        self.encoder, self.feature_dim = build_backbone(cfg.backbone, env.channels, env.image_size)
        self.encoder.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.normalize(images)).flatten(1)
