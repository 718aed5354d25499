"""MAML (Finn et al. 2017), first-order MAML and ANIL (Raghu et al. 2020) on learn2learn.

The network is a backbone plus a linear N-way head (N = the benchmark's ways), with batch norm in
the transductive form of the original MAML (batch statistics, no running averages). Each training
step samples a meta-batch of tasks (``train.batch_size``); each task's fast weights take
``inner_steps`` gradient steps of size ``inner_lr`` on its support set, and the query loss of the
adapted weights, averaged over the tasks, updates the initialisation (second order unless
``first_order``). ``adapt=head`` adapts only the head (ANIL). At test time every fixed episode's
support set is adapted to with ``test_inner_steps`` / ``test_inner_lr`` (the ``adapt`` head).

Tasks are adapted one after another with learn2learn's ``MAML.clone()/adapt()``. Batching the
tasks of a meta-batch with ``torch.func`` (``vmap`` over ``grad``) was measured slower on CPU
(tests/perf/bench_meta.py) and, with batch norm, its second-order meta-gradient disagrees with
autograd's, so it is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.backbones import build_backbone
from harness.config import at_least, positive
from harness.errors import ConfigError
from harness.libs import learn2learn
from harness.method import Method
from harness.samplers import EpisodeSampler


@dataclass
class MAMLConfig:
    """``train_shots`` = 0 takes the benchmark's shots; the meta-batch size is ``train.batch_size``."""

    backbone: str = "conv4"
    inner_lr: float = field(default=0.4, metadata=positive())
    inner_steps: int = field(default=1, metadata=at_least(0))
    test_inner_lr: float = field(default=0.4, metadata=positive())
    test_inner_steps: int = field(default=3, metadata=at_least(0))
    train_shots: int = field(default=0, metadata=at_least(0))
    train_queries: int = field(default=1, metadata=at_least(1))
    first_order: bool = False
    adapt: Literal["all", "head"] = "all"


class MAML(Method):
    Config = MAMLConfig
    default_head = "adapt"
    splits = "tasks"  # several processes: each adapts to its share of the meta-batch (second order too)

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        benchmark.check_training_classes(run, *cls.training_ways(run))

    @staticmethod
    def training_ways(run) -> tuple[str, int]:
        """The setting that gives a training task's ways, and its value."""
        return "bench.ways", run.bench.ways

    def __init__(self, cfg: MAMLConfig, env):
        super().__init__(cfg, env)
        body, dim = build_backbone(cfg.backbone, env.channels, env.image_size)
        torch.func.replace_all_batch_norm_modules_(body)
        self.ways = env.ways
        self.net = nn.Sequential(body, nn.Flatten(), nn.Linear(dim, self.ways))

    def setup(self, data) -> None:
        shots = self.cfg.train_shots or self.env.shots
        self.sampler = EpisodeSampler(
            data.labels.cpu(),
            self.ways,
            shots,
            self.cfg.train_queries,
            ("bench.ways", "method.train_shots", "method.train_queries"),
        )

    # ------------------------------------------------------------------ adaptation
    def adapted_query_logits(self, xs, ys, xq, steps: int, lr: float, first_order: bool) -> torch.Tensor:
        """Adapt to each task's support set ([B, S, ...], [B, S]); logits of its queries [B, M, N]."""
        if self.cfg.adapt == "head":
            body = self.net[:2]
            return torch.stack(
                [self.adapt_task(body(xs[b]), ys[b], steps, lr, first_order)(body(xq[b])) for b in range(len(xs))]
            )
        return torch.stack([self.adapt_task(xs[b], ys[b], steps, lr, first_order)(xq[b]) for b in range(len(xs))])

    def adapt_task(self, support, support_labels, steps: int, lr: float, first_order: bool):
        """learn2learn: ``MAML(module, lr).clone()`` adapted by ``steps`` steps on the support loss. The
        module is the whole network, or (``adapt=head``) the head, then ``support`` are features."""
        module = self.net if self.cfg.adapt == "all" else self.net[2]
        learner = learn2learn().algorithms.MAML(module, lr=lr, first_order=first_order).clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(support), support_labels))
        return learner

    # ------------------------------------------------------------------ training and evaluation
    def training_step(self, data, step, progress, generator):
        support, support_labels, query, query_labels = (
            self.env.world.shard(t) for t in self.sampler.sample(generator, self.env.batch_size)
        )
        device = data.images.device
        xs = self._normalize_tasks(data.images[support.to(device)])
        xq = self._normalize_tasks(data.images[query.to(device)])
        return self.loss(xs, support_labels.to(device), xq, query_labels.to(device))

    def loss(self, xs, ys, xq, yq) -> dict:
        """The meta-loss of a batch of tasks (normalised images [B, n, C, H, W], episode labels [B, n])."""
        logits = self.adapted_query_logits(xs, ys, xq, self.cfg.inner_steps, self.cfg.inner_lr, self.cfg.first_order)
        return {
            "loss": F.cross_entropy(logits.flatten(0, 1), yq.flatten()),
            "accuracy": (logits.argmax(-1) == yq).float().mean(),
        }

    def _normalize_tasks(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, n, C, H, W] → normalised float, same shape."""
        return self.normalize(images.flatten(0, 1)).unflatten(0, images.shape[:2])

    def solve_episodes(self, support, support_labels, query, ways):
        if ways != self.ways:
            raise ConfigError(
                f"this MAML network has a {self.ways}-way head; the episodes are {ways}-way. "
                f"Score it on a {self.ways}-way benchmark."
            )
        with torch.enable_grad():
            logits = self.adapted_query_logits(
                self._normalize_tasks(support),
                support_labels.to(self._mean.device),
                self._normalize_tasks(query),
                self.cfg.test_inner_steps,
                self.cfg.test_inner_lr,
                first_order=True,
            )
        return logits.detach()
