"""The momentum-target layer of BYOL, MoCo, PsCo and DINO (one layer for every such method, as
solo-learn's ``BaseMomentumMethod.momentum_pairs``): a method names its (online, target) network
pairs; each target starts as a copy of its online network that takes no gradient, and before each loss
moves towards it (lightly's ``update_momentum``: target ← m·target + (1 − m)·online) with the momentum m
following lightly's ``cosine_schedule`` from ``method.momentum_base`` to 1 along training progress."""

from __future__ import annotations

import copy
from typing import ClassVar

from torch import nn

from harness.ssl import SCHEDULE_STEPS


class MomentumTargets:
    """Mixin for a method whose settings have ``momentum_base``: ``momentum_pairs`` names its (online,
    target) attributes; ``make_targets()`` (in ``__init__``, once the online networks exist) makes the
    targets, in that order; ``update_targets(progress)`` moves them all and returns the momentum."""

    momentum_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()

    def make_targets(self) -> None:
        from lightly.models.utils import deactivate_requires_grad

        for online, target in self.momentum_pairs:
            network = self.target_copy(getattr(self, online))
            deactivate_requires_grad(network)
            setattr(self, target, network)

    def target_copy(self, online: nn.Module) -> nn.Module:
        """A copy of ``online``, weights included (a deep copy, unless a method's network cannot take one)."""
        return copy.deepcopy(online)

    def momentum(self, progress: float) -> float:
        """m from ``momentum_base`` to 1 along training progress (steps, or the time budget), by lightly's
        cosine schedule over ``SCHEDULE_STEPS`` steps."""
        from lightly.utils.scheduler import cosine_schedule

        return cosine_schedule(round(progress * SCHEDULE_STEPS), SCHEDULE_STEPS + 1, self.cfg.momentum_base, 1.0)

    def update_targets(self, progress: float) -> float:
        """Move every target towards its online network at this point of training; the momentum used."""
        from lightly.models.utils import update_momentum

        m = self.momentum(progress)
        for online, target in self.momentum_pairs:
            update_momentum(getattr(self, online), getattr(self, target), m)
        return m
