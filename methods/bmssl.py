"""BMSSL: Bootstrapped Meta Self-Supervised Learning (Wang, Song, Qiang & Zheng, arXiv 2308.14267).

1. Tasks from unlabeled images: ``ways`` (N) images, ``views_per_image`` (V) augmented views of each;
   each image is its own pseudo-class; its first ``support_views`` (S) views form the support set,
   the other V−S the query set. No label is used anywhere (the runner gives this method none).
2. First level: from the meta-parameters θ (encoder, optional projection, and a linear head over the
   N pseudo-classes initialised from the support prototypes — ``head_init=proto``, W = 2p/τ,
   b = −‖p‖²/τ, ProtoNet's classifier — or ``zero``), take ``inner_steps`` (K) gradient steps of
   size ``inner_lr`` (α) on the support cross-entropy: θ_K. ``adapt=head`` adapts the head only,
   ``adapt=all`` the encoder and projection too.
3. Second level: the query loss of θ_K is back-propagated to θ (second order unless ``first_order``).
4. Bootstrapped target (Flennerhag et al. 2022): from θ_K, ``target_steps`` (L) more support steps and
   one step on the query loss give θ̃, held constant. ``match=kl`` adds KL(p_θ̃ ‖ p_θK) over the
   pseudo-class predictions of the queries, ``match=l2`` the squared distance of their embeddings
   (``adapt=all`` only: a head-only θ̃ leaves embeddings unchanged). Outer loss =
   (1 − λ)·query loss + λ·match, λ = ``bootstrap_weight``.

Special cases (tested): λ = 0 is the plain bi-level loss; K = 0 scores the queries with the
initial head, i.e. (with ``head_init=proto``) ProtoNet's loss on pseudo-classes — a contrastive
learner without the first level. ``train.batch_size`` tasks are solved per step.

The bi-level part: head-only adaptation takes ``torch.func.grad`` of the summed task losses with
respect to the stacked heads (all tasks of a meta-batch at once), which measured faster than both
``vmap`` over per-task ``grad`` and learn2learn's per-task ``MAML.clone()/adapt()`` on identical
work (tests/perf/bench_bmssl.py); ``adapt=all`` adapts task by task with
``torch.func.functional_call`` and ``torch.autograd.grad``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from harness.config import at_least, positive
from harness.errors import ConfigError
from harness.heads import prototypes
from harness.ssl import SelfSupervised


@dataclass
class BMSSLConfig:
    """N = ``ways``, V = ``views_per_image``, S = ``support_views``, K = ``inner_steps``,
    L = ``target_steps``, α = ``inner_lr``, λ = ``bootstrap_weight``; views: the run's ``views.*``."""

    backbone: str = "conv4"
    ways: int = field(default=32, metadata=at_least(2))
    views_per_image: int = field(default=4, metadata=at_least(2))
    support_views: int = field(default=1, metadata=at_least(1))
    inner_steps: int = field(default=1, metadata=at_least(0))
    target_steps: int = field(default=1, metadata=at_least(0))
    inner_lr: float = field(default=0.5, metadata=positive())
    bootstrap_weight: float = field(default=0.5, metadata={"min": 0, "max": 1})
    match: Literal["kl", "l2"] = "kl"
    adapt: Literal["head", "all"] = "head"
    first_order: bool = False
    head_init: Literal["proto", "zero"] = "proto"
    temperature: float = field(default=0.1, metadata=positive())
    normalize: bool = True  # L2-normalise embeddings before the head
    projection_hidden: int = field(default=0, metadata=at_least(0))  # 0: no projection MLP
    projection_dim: int = field(default=128, metadata=at_least(1))


class BMSSL(SelfSupervised):
    Config = BMSSLConfig
    splits = "tasks"  # several processes: a share of the tasks each, batch norm over all of them

    @classmethod
    def check_world(cls, run, procs: int) -> None:
        super().check_world(run, procs)
        if run.method.adapt == "all":
            raise ConfigError(
                "method.adapt=all forwards each task on its own through the adapted network, which "
                "batch norm synchronised over processes would mix; run it with --procs 1, or use "
                "method.adapt=head"
            )

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        super().check_config(run, benchmark)
        cfg = run.method
        if cfg.support_views >= cfg.views_per_image:
            raise ConfigError(
                f"method.support_views ({cfg.support_views}) must be below method.views_per_image "
                f"({cfg.views_per_image}): the remaining views are the queries"
            )
        if cfg.match == "l2" and cfg.adapt == "head":
            raise ConfigError(
                "method.match=l2 compares embeddings, which head-only adaptation leaves unchanged; "
                "use method.match=kl or method.adapt=all"
            )

    def __init__(self, cfg: BMSSLConfig, env):
        super().__init__(cfg, env)
        if cfg.projection_hidden:
            from lightly.models.modules import SimCLRProjectionHead

            self.projection = SimCLRProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        else:
            self.projection = nn.Identity()

    def setup(self, data) -> None:
        self.views = self.view_generator("simclr")

    # ------------------------------------------------------------------ tasks from unlabeled images
    def make_tasks(self, data, generator: torch.Generator) -> torch.Tensor:
        """uint8 views [B, N, V, C, H, W] of B·N distinct unlabeled images (pseudo-class = image)."""
        cfg, tasks = self.cfg, self.env.batch_size
        images = self.image_batch(data, tasks * cfg.ways, generator)
        views = self.views(images.repeat_interleave(cfg.views_per_image, dim=0), generator)  # one batched call
        return views.unflatten(0, (tasks, cfg.ways, cfg.views_per_image))

    def pseudo_labels(self, per_image: int, device) -> torch.Tensor:
        return torch.arange(self.cfg.ways, device=device).repeat_interleave(per_image)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, V, ...] → support [B, N·S, ...] and query [B, N·(V−S), ...], image-major."""
        s = self.cfg.support_views
        return z[:, :, :s].flatten(1, 2), z[:, :, s:].flatten(1, 2)

    def embed_views(self, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """Normalised views [n, C, H, W] → head inputs [n, D] (with ``params``: a functional call)."""
        if params is None:
            z = self.projection(self.encoder(x).flatten(1))
        else:
            z = functional_call(self.body, params, (x,))
        return F.normalize(z, dim=-1) if self.cfg.normalize else z

    @property
    def body(self) -> nn.Module:
        return nn.Sequential(self.encoder, nn.Flatten(), self.projection)

    # ------------------------------------------------------------------ the head
    def init_head(self, support: torch.Tensor, support_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [.., N, D], b [.., N]) from support embeddings [.., N·S, D] (prototypes or zeros)."""
        n, batch = self.cfg.ways, support.shape[:-2]
        if self.cfg.head_init == "zero":
            return support.new_zeros(*batch, n, support.shape[-1]), support.new_zeros(*batch, n)
        tasks = support.reshape(-1, *support.shape[-2:])
        protos = prototypes(tasks, support_labels.expand(len(tasks), -1), n).reshape(*batch, n, -1)
        return 2 * protos / self.cfg.temperature, -protos.pow(2).sum(-1) / self.cfg.temperature

    @staticmethod
    def head_logits(head, z: torch.Tensor) -> torch.Tensor:
        weight, bias = head
        return z @ weight.transpose(-1, -2) + bias.unsqueeze(-2)

    def head_loss(self, head, z, labels) -> torch.Tensor:
        return F.cross_entropy(self.head_logits(head, z), labels)

    def adapt_heads(self, head, z, labels, steps: int, first_order: bool):
        """``steps`` gradient steps of every task's head on (z [B, M, D], labels [M]), all tasks at once:
        the gradient of the summed task losses w.r.t. the stacked heads is each task's own gradient."""

        def summed_task_losses(head):
            logits = self.head_logits(head, z)
            return F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(z)), reduction="sum") / len(labels)

        for _ in range(steps):
            grads = grad(summed_task_losses)(head)
            if first_order:
                grads = tuple(g.detach() for g in grads)
            head = tuple(h - self.cfg.inner_lr * g for h, g in zip(head, grads))
        return head

    # ------------------------------------------------------------------ the bi-level loss
    def training_step(self, data, step, progress, generator):
        return self.loss(self.env.world.shard(self.make_tasks(data, generator)))

    def loss(self, views: torch.Tensor) -> dict:
        """The outer loss of tasks of normalised views [B, N, V, C, H, W], its two terms, and the adapted heads'
        accuracy on the queries (how hard the pseudo-tasks still are)."""
        if self.cfg.adapt == "head":
            losses = self.head_bilevel(views)
        else:
            losses = self.full_bilevel(views)
        loss = (1 - self.cfg.bootstrap_weight) * losses["query_loss"] + self.cfg.bootstrap_weight * losses["match_loss"]
        return {"loss": loss, **losses}

    def head_bilevel(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """adapt=head: one encoder pass over all views; heads adapted for all tasks at once."""
        cfg = self.cfg
        z = self.embed_views(views.flatten(0, 2)).unflatten(0, views.shape[:3])  # [B, N, V, D]
        support, query = self.split(z)
        ys = self.pseudo_labels(cfg.support_views, z.device)
        yq = self.pseudo_labels(cfg.views_per_image - cfg.support_views, z.device)
        head = self.adapt_heads(self.init_head(support, ys), support, ys, cfg.inner_steps, cfg.first_order)
        logits = self.head_logits(head, query)  # [B, M, N]
        losses = {
            "query_loss": F.cross_entropy(logits.flatten(0, 1), yq.repeat(len(z))),
            "query_accuracy": (logits.detach().argmax(-1) == yq).float().mean(),
        }
        if cfg.bootstrap_weight > 0:
            with torch.no_grad():
                target_head = tuple(h.detach() for h in head)
                target_head = self.adapt_heads(target_head, support.detach(), ys, cfg.target_steps, True)
                target_head = self.adapt_heads(target_head, query.detach(), yq, 1, True)
                target = F.softmax(self.head_logits(target_head, query.detach()), dim=-1)
            losses["match_loss"] = kl_to_target(target, logits)
        else:
            losses["match_loss"] = torch.zeros((), device=z.device)
        return losses

    def full_bilevel(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """adapt=all: each task adapts encoder, projection and head (functional fast weights)."""
        cfg = self.cfg
        ys = self.pseudo_labels(cfg.support_views, views.device)
        yq = self.pseudo_labels(cfg.views_per_image - cfg.support_views, views.device)
        meta = dict(self.body.named_parameters())
        query_losses, match_losses, accuracies = [], [], []
        for task in views:
            xs, xq = (x.flatten(0, 1) for x in self.split(task[None]))
            head = self.init_head(self.embed_views(xs, meta), ys)
            fast = self.adapt_all(meta, head, xs, ys, cfg.inner_steps, cfg.first_order)
            query_z = self.embed_views(xq, fast[0])
            logits = self.head_logits(fast[1], query_z)
            query_losses.append(F.cross_entropy(logits, yq))
            accuracies.append((logits.detach().argmax(-1) == yq).float().mean())
            if cfg.bootstrap_weight > 0:
                detached = ({k: v.detach() for k, v in fast[0].items()}, tuple(h.detach() for h in fast[1]))
                params, target_head = self.adapt_all(*detached, xs, ys, cfg.target_steps, True)
                params, target_head = self.adapt_all(params, target_head, xq, yq, 1, True)
                with torch.no_grad():
                    target_z = self.embed_views(xq, params)
                    target = F.softmax(self.head_logits(target_head, target_z), dim=-1)
                match_losses.append(
                    kl_to_target(target, logits) if cfg.match == "kl" else (query_z - target_z).pow(2).sum(-1).mean()
                )
        zero = torch.zeros((), device=views.device)
        return {
            "query_loss": torch.stack(query_losses).mean(),
            "query_accuracy": torch.stack(accuracies).mean(),
            "match_loss": torch.stack(match_losses).mean() if match_losses else zero,
        }

    def adapt_all(self, params: dict, head, x, labels, steps: int, first_order: bool):
        """``steps`` support steps on body parameters and head together → (params, head). First order:
        each step's gradient is taken at a detached copy, so only the identity path reaches θ."""
        for _ in range(steps):
            leaves = [*params.values(), *head]
            with torch.enable_grad():
                at = [v.detach().requires_grad_() for v in leaves] if first_order else leaves
                at_params, at_head = dict(zip(params, at[: len(params)])), tuple(at[len(params) :])
                loss = self.head_loss(at_head, self.embed_views(x, at_params), labels)
                grads = torch.autograd.grad(loss, at, create_graph=not first_order, allow_unused=True)
            new = [v if g is None else v - self.cfg.inner_lr * g for v, g in zip(leaves, grads)]
            params, head = dict(zip(params, new[: len(params)])), tuple(new[len(params) :])
        return params, head


def kl_to_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ softmax(logits)), averaged over queries; gradients reach ``logits`` only."""
    return F.kl_div(F.log_softmax(logits, dim=-1).flatten(0, -2), target.flatten(0, -2), reduction="batchmean")
