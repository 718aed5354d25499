"""Optimisation, owned by the runner: one optimiser per parameter group a method declares, the
learning-rate schedule, mixed precision, and the step itself (zero, backward, average over processes,
clip, step). Methods only return losses."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from harness.config import TrainConfig
from harness.distributed import SINGLE, World
from harness.errors import HarnessError

SCALER = "grad_scaler"  # the float16 gradient scaler's state, next to the optimisers' in checkpoints


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``train.optimizer`` names, with ``train.lr`` and ``train.weight_decay``."""
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=0.9, nesterov=True, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)


def lr_factor(schedule: str, progress: float) -> float:
    """The schedule's multiplier of ``train.lr`` at ``progress`` (0..1): 1, or a cosine decay to 0."""
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0


class Optimization:
    """The optimisers of one method's parameter groups, scheduled and stepped together."""

    def __init__(
        self,
        groups: dict[str, list],
        train: TrainConfig,
        device: torch.device = torch.device("cpu"),
        world: World = SINGLE,
    ):
        self.train, self.device, self.world = train, device, world
        self.optimizers = {name: make_optimizer(params, train) for name, params in groups.items()}
        self.params = [p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]]
        # float16 needs its loss scaled against underflow; bfloat16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type) if train.precision == "16" else None

    def autocast(self):
        """The context a training step's forward pass runs in: autocast to ``train.precision``."""
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.train.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()

    def schedule(self, progress: float) -> float:
        """Set every group's learning rate for ``progress``; returns that rate."""
        lr = self.train.lr * lr_factor(self.train.schedule, progress)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def step(self, outputs: dict) -> dict:
        """Back-propagate ``outputs["loss"]`` and step every optimiser; returns the outputs detached."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss = outputs["loss"].float()
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self.world.average_gradients(self.params)  # several processes: the mean of their shares' gradients
        if self.scaler:
            for opt in self.optimizers.values():
                self.scaler.unscale_(opt)  # clipping sees the true gradients
        if self.train.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.clip_grad_norm)
        for opt in self.optimizers.values():
            self.scaler.step(opt) if self.scaler else opt.step()
        if self.scaler:
            self.scaler.update()
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()}

    def state_dict(self) -> dict:
        state = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return {**state, SCALER: self.scaler.state_dict()} if self.scaler else state

    def load_state_dict(self, state: dict, fix: str = "") -> None:
        if self.scaler and SCALER in state:
            state = dict(state)
            self.scaler.load_state_dict(state.pop(SCALER))
        if set(state) != set(self.optimizers):
            raise HarnessError(
                f"the checkpoint holds optimisers {sorted(state)}, and this method has {sorted(self.optimizers)} "
                f"(a checkpoint of an older harness or another method); {fix}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
