"""BMSSL: Bootstrapped Meta Self-Supervised Learning (Wang, Song, Qiang & Zheng, arXiv 2308.14267).

1. Tasks from unlabeled images: ``ways`` (N) images, ``views_per_image`` (V) augmented views of each;
   each image is its own pseudo-class; its first ``support_views`` (S) views form the support set,
   the other V−S the query set. ``target_views`` (T) more views of each image are seen only by the
   bootstrapped target ("future" shots). No label is used anywhere (the runner gives this method none).
2. First level: from the meta-parameters θ (encoder, optional projection, and a linear head over the
   N pseudo-classes initialised from the support prototypes — ``head_init=proto``, W = 2p/τ,
   b = −‖p‖²/τ, ProtoNet's classifier — or at ``zero``), take ``inner_steps`` (K) gradient steps of
   size ``inner_lr`` (α) on the support cross-entropy: θ_K. ``inner_lr_units=logit`` scales a step by N,
   so that α is in logit units whatever the number of pseudo-classes (a step moves a support view's own
   logit by about α; from a zero head the first step is the prototype classifier at temperature 1/α);
   ``learn_inner_lr`` makes α one learned rate per step and per head tensor (Meta-SGD, Li et al. 2017;
   MAML++'s per-step rates, Antoniou et al. 2019). ``adapt=head`` adapts the head only (a zero head
   makes it permutation-invariant over the pseudo-classes, Ye & Chao 2022), ``adapt=all`` the encoder
   and projection too. ``center`` (head only) subtracts each task's support mean from the head's inputs
   and normalises them again (SimpleShot's CL2N, Wang et al. 2019): an untrained encoder's embeddings are
   nearly collinear (mean cosine 0.89 on Omniglot), which makes steps of a few logits diverge.
3. Second level: the query loss of θ_K is back-propagated to θ (second order unless ``first_order``).
4. Bootstrapped target (Flennerhag et al. 2022): from θ_K, ``target_steps`` (L) more steps on the support
   and the target's own views, of size ``target_lr`` (default α), and one step on the query loss give θ̃,
   held constant: it has seen what the first level has not. ``match=kl`` adds KL(p_θ̃ ‖ p_θK) over the
   pseudo-class predictions of the queries, ``match=l2`` the squared distance of their embeddings
   (``adapt=all`` only: a head-only θ̃ leaves embeddings unchanged). Outer loss =
   (1 − λ)·query loss + λ·match, λ = ``bootstrap_weight``.

On the steps the runner logs (``diagnose``), the loss also reports what each mechanism does: the support
loss at θ₀ and θ_K, ``inner_gain`` (query loss at θ₀ minus at θ_K, nats), ``target_shift`` (largest
|logit of θ̃ − logit of θ_K| on the queries), ``match_kl`` (KL(p_θ̃ ‖ p_θK) before weighting) and
``grad_ratio`` (‖∇θ λ·match‖ / ‖∇θ (1 − λ)·query‖); :meth:`BMSSL.mechanism_floors` names the levels
below which a run is warned that a mechanism is inert.

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

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from harness.config import added, at_least, positive
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
    inner_lr_units: Literal["loss", "logit"] = field(default="loss", metadata=added())  # α of the mean loss, or ×N
    learn_inner_lr: bool = field(default=False, metadata=added())  # α per step and head tensor, meta-learned
    target_views: int = field(default=0, metadata=added(at_least(0)))  # T: views only the target sees
    target_lr: float = field(default=0.0, metadata=added(at_least(0)))  # the target's step size (0: α)
    center: bool = field(default=False, metadata=added())  # head inputs minus the support mean, renormalised


class BMSSL(SelfSupervised):
    Config = BMSSLConfig
    splits = "tasks"  # several processes: a share of the tasks each, batch norm over all of them
    mechanisms = ("support_loss_init", "support_loss_adapted", "inner_gain", "target_shift", "match_kl", "grad_ratio")

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
        if cfg.center and cfg.adapt == "all":
            raise ConfigError(
                "method.center centres the head's inputs on the support mean of one encoder pass, and "
                "adapt=all re-embeds the support at every step; use method.center=false with adapt=all"
            )
        if cfg.head_init == "zero" and cfg.inner_steps == 0:
            raise ConfigError(
                "method.head_init=zero with method.inner_steps=0 scores every query uniformly, so nothing "
                "is learned; take at least one inner step, or use method.head_init=proto"
            )

    @classmethod
    def mechanism_floors(cls, cfg) -> dict[str, float]:
        """Below these medians (second half of a run) a mechanism the settings switch on is inert: a first
        level that gains under 0.05 nats on the queries, a target within 1e-3 nats of the learner."""
        floors = {"inner_gain": 0.05} if cfg.inner_steps else {}
        return floors | ({"match_kl": 1e-3} if cfg.bootstrap_weight else {})

    def __init__(self, cfg: BMSSLConfig, env):
        super().__init__(cfg, env)
        if cfg.projection_hidden:
            from lightly.models.modules import SimCLRProjectionHead

            self.projection = SimCLRProjectionHead(self.feature_dim, cfg.projection_hidden, cfg.projection_dim)
        else:
            self.projection = nn.Identity()
        if cfg.learn_inner_lr:  # log α per inner step, for W and b
            self.log_inner_lr = nn.Parameter(torch.full((max(1, cfg.inner_steps), 2), math.log(cfg.inner_lr)))

    def setup(self, data) -> None:
        self.views = self.view_generator("simclr")

    # ------------------------------------------------------------------ tasks from unlabeled images
    def make_tasks(self, data, generator: torch.Generator) -> torch.Tensor:
        """uint8 views [B, N, V + T, C, H, W] of B·N distinct unlabeled images (pseudo-class = image)."""
        cfg, tasks = self.cfg, self.env.batch_size
        per_image = cfg.views_per_image + cfg.target_views
        images = self.image_batch(data, tasks * cfg.ways, generator)
        views = self.views(images.repeat_interleave(per_image, dim=0), generator)  # one batched call
        return views.unflatten(0, (tasks, cfg.ways, per_image))

    def pseudo_labels(self, per_image: int, device) -> torch.Tensor:
        return torch.arange(self.cfg.ways, device=device).repeat_interleave(per_image)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, V, ...] → support [B, N·S, ...] and query [B, N·(V−S), ...], image-major (views past V,
        the target's own, are in neither)."""
        s, v = self.cfg.support_views, self.cfg.views_per_image
        return z[:, :, :s].flatten(1, 2), z[:, :, s:v].flatten(1, 2)

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

    def step_sizes(self, step: int, target: bool = False) -> tuple:
        """(α for W, α for b) of inner step ``step`` (the target's: ``target_lr``), in the units of
        ``inner_lr_units`` (logit: times N)."""
        scale = self.cfg.ways if self.cfg.inner_lr_units == "logit" else 1
        if target:
            return (scale * (self.cfg.target_lr or self.cfg.inner_lr),) * 2
        if self.cfg.learn_inner_lr:
            return tuple(scale * rate for rate in self.log_inner_lr[step].exp())
        return (scale * self.cfg.inner_lr,) * 2

    def adapt_heads(self, head, z, labels, steps: int, first_order: bool, target: bool = False):
        """``steps`` gradient steps of every task's head on (z [B, M, D], labels [M]), all tasks at once:
        the gradient of the summed task losses w.r.t. the stacked heads is each task's own gradient."""

        def summed_task_losses(head):
            logits = self.head_logits(head, z)
            return F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(z)), reduction="sum") / len(labels)

        for step in range(steps):
            grads = grad(summed_task_losses)(head)
            if first_order:
                grads = tuple(g.detach() for g in grads)
            head = tuple(h - rate * g for h, g, rate in zip(head, grads, self.step_sizes(step, target)))
        return head

    def centred(self, support: torch.Tensor, *others: torch.Tensor | None) -> list:
        """With ``center``: the head inputs minus the task's support mean, normalised again (as given otherwise)."""
        if not self.cfg.center:
            return [support, *others]
        mean = support.mean(-2, keepdim=True)

        def shift(x):
            if x is None:
                return None
            return F.normalize(x - mean, dim=-1) if self.cfg.normalize else x - mean

        return [shift(support), *map(shift, others)]

    def target_set(self, support, future, ys):
        """The target's support: the learner's (detached) and, with ``target_views``, the views only it sees."""
        if future is None:
            return support.detach(), ys
        yt = self.pseudo_labels(self.cfg.target_views, ys.device)
        return torch.cat([support.detach(), future], 1), torch.cat([ys, yt])

    # ------------------------------------------------------------------ the bi-level loss
    def training_step(self, data, step, progress, generator):
        return self.loss(self.env.world.shard(self.make_tasks(data, generator)))

    def loss(self, views: torch.Tensor) -> dict:
        """The outer loss of tasks of normalised views [B, N, V + T, C, H, W], its two terms, and the adapted
        heads' accuracy on the queries (how hard the pseudo-tasks still are); on ``diagnose`` steps also what
        each mechanism does (the module doc)."""
        cfg = self.cfg
        losses = self.head_bilevel(views) if cfg.adapt == "head" else self.full_bilevel(views)
        query_term = (1 - cfg.bootstrap_weight) * losses["query_loss"]
        match_term = cfg.bootstrap_weight * losses["match_loss"]
        if self.diagnose:
            losses["grad_ratio"] = gradient_ratio(match_term, query_term, self.parameters())
        return {"loss": query_term + match_term, **losses}

    def head_bilevel(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """adapt=head: one encoder pass over all views; heads adapted for all tasks at once."""
        cfg = self.cfg
        learner = views[:, :, : cfg.views_per_image]
        z = self.embed_views(learner.flatten(0, 2)).unflatten(0, learner.shape[:3])  # [B, N, V, D]
        support, query = self.centred(*self.split(z))
        ys = self.pseudo_labels(cfg.support_views, z.device)
        yq = self.pseudo_labels(cfg.views_per_image - cfg.support_views, z.device)
        init = self.init_head(support, ys)
        head = self.adapt_heads(init, support, ys, cfg.inner_steps, cfg.first_order)
        logits = self.head_logits(head, query)  # [B, M, N]
        losses = {
            "query_loss": F.cross_entropy(logits.flatten(0, 1), yq.repeat(len(z))),
            "query_accuracy": (logits.detach().argmax(-1) == yq).float().mean(),
            "match_loss": torch.zeros((), device=z.device),
        }
        if cfg.bootstrap_weight > 0 or self.diagnose:
            # with λ = 0 the target is a diagnostic only: its forward pass leaves batch norm's statistics alone
            with torch.no_grad(), running_stats_kept(self, cfg.bootstrap_weight == 0):
                future = None
                if cfg.target_views:
                    own = views[:, :, cfg.views_per_image :]
                    future = self.embed_views(own.flatten(0, 2)).unflatten(0, own.shape[:3]).flatten(1, 2)
                    future = self.centred(self.split(z)[0].detach(), future)[1]  # [B, N·T, D], image-major
                target_support, yt = self.target_set(support, future, ys)
                target_head = tuple(h.detach() for h in head)
                target_head = self.adapt_heads(target_head, target_support, yt, cfg.target_steps, True, target=True)
                target_head = self.adapt_heads(target_head, query.detach(), yq, 1, True, target=True)
                target_logits = self.head_logits(target_head, query.detach())
            if cfg.bootstrap_weight > 0:
                losses["match_loss"] = kl_to_target(F.softmax(target_logits, dim=-1), logits)
            if self.diagnose:
                flat = lambda h, x, y: F.cross_entropy(self.head_logits(h, x).flatten(0, 1), y.repeat(len(z)))  # noqa: E731
                losses |= mechanism_report(
                    support_init=flat(init, support, ys),
                    support_adapted=flat(head, support, ys),
                    query_init=flat(init, query, yq),
                    query_adapted=losses["query_loss"],
                    logits=logits,
                    target_logits=target_logits,
                )
        return losses

    def full_bilevel(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """adapt=all: each task adapts encoder, projection and head (functional fast weights)."""
        cfg = self.cfg
        ys = self.pseudo_labels(cfg.support_views, views.device)
        yq = self.pseudo_labels(cfg.views_per_image - cfg.support_views, views.device)
        meta = dict(self.body.named_parameters())
        outcomes = []
        for task in views:
            xs, xq = (x.flatten(0, 1) for x in self.split(task[None]))
            init = self.init_head(self.embed_views(xs, meta), ys)
            fast = self.adapt_all(meta, init, xs, ys, cfg.inner_steps, cfg.first_order)
            query_z = self.embed_views(xq, fast[0])
            logits = self.head_logits(fast[1], query_z)
            outcome = {
                "query_loss": F.cross_entropy(logits, yq),
                "query_accuracy": (logits.detach().argmax(-1) == yq).float().mean(),
            }
            if cfg.bootstrap_weight > 0 or self.diagnose:
                xt, yt = xs, ys
                if cfg.target_views:
                    xt = torch.cat([xs, task[:, cfg.views_per_image :].flatten(0, 1)])
                    yt = torch.cat([ys, self.pseudo_labels(cfg.target_views, ys.device)])
                detached = ({k: v.detach() for k, v in fast[0].items()}, tuple(h.detach() for h in fast[1]))
                with running_stats_kept(self, cfg.bootstrap_weight == 0):  # λ = 0: a diagnostic only
                    params, target_head = self.adapt_all(*detached, xt, yt, cfg.target_steps, True, target=True)
                    params, target_head = self.adapt_all(params, target_head, xq, yq, 1, True, target=True)
                    with torch.no_grad():
                        target_z = self.embed_views(xq, params)
                        target_logits = self.head_logits(target_head, target_z)
                if cfg.bootstrap_weight > 0:
                    outcome["match_loss"] = (
                        kl_to_target(F.softmax(target_logits, dim=-1), logits)
                        if cfg.match == "kl"
                        else (query_z - target_z).pow(2).sum(-1).mean()
                    )
                if self.diagnose:  # measured without moving batch norm's statistics: training is unchanged
                    with torch.no_grad(), running_stats_kept(self):
                        support_z = self.embed_views(xs, fast[0])
                        outcome |= mechanism_report(
                            support_init=self.head_loss(init, self.embed_views(xs, meta), ys),
                            support_adapted=self.head_loss(fast[1], support_z, ys),
                            query_init=self.head_loss(init, self.embed_views(xq, meta), yq),
                            query_adapted=outcome["query_loss"],
                            logits=logits,
                            target_logits=target_logits,
                        )
            outcomes.append(outcome)
        losses = {key: torch.stack([o[key] for o in outcomes]).mean() for key in outcomes[0]}
        losses.setdefault("match_loss", torch.zeros((), device=views.device))
        if "target_shift" in losses:  # the largest over tasks, not their mean
            losses["target_shift"] = torch.stack([o["target_shift"] for o in outcomes]).max()
        return losses

    def adapt_all(self, params: dict, head, x, labels, steps: int, first_order: bool, target: bool = False):
        """``steps`` support steps on body parameters and head together → (params, head). First order:
        each step's gradient is taken at a detached copy, so only the identity path reaches θ."""
        for step in range(steps):
            leaves = [*params.values(), *head]
            with torch.enable_grad():
                at = [v.detach().requires_grad_() for v in leaves] if first_order else leaves
                at_params, at_head = dict(zip(params, at[: len(params)])), tuple(at[len(params) :])
                loss = self.head_loss(at_head, self.embed_views(x, at_params), labels)
                grads = torch.autograd.grad(loss, at, create_graph=not first_order, allow_unused=True)
            weight_rate, bias_rate = self.step_sizes(step, target)
            rates = [weight_rate] * (len(leaves) - 1) + [bias_rate]
            new = [v if g is None else v - rate * g for v, g, rate in zip(leaves, grads, rates)]
            params, head = dict(zip(params, new[: len(params)])), tuple(new[len(params) :])
        return params, head


@contextmanager
def running_stats_kept(module: nn.Module, active: bool = True):
    """Forward passes in the block leave ``module``'s buffers (batch norm's running statistics) as they were."""
    if not active:
        yield
        return
    saved = [buffer.clone() for buffer in module.buffers()]
    try:
        yield
    finally:
        for buffer, value in zip(module.buffers(), saved):
            buffer.data.copy_(value)  # as batch norm updates them: no autograd version bump


def kl_to_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ softmax(logits)), averaged over queries; gradients reach ``logits`` only."""
    return F.kl_div(F.log_softmax(logits, dim=-1).flatten(0, -2), target.flatten(0, -2), reduction="batchmean")


def mechanism_report(support_init, support_adapted, query_init, query_adapted, logits, target_logits) -> dict:
    """What the first level and the target do, measured on one step (detached scalars; the module doc)."""
    logits = logits.detach()
    return {
        "support_loss_init": support_init.detach(),
        "support_loss_adapted": support_adapted.detach(),
        "inner_gain": (query_init - query_adapted).detach(),
        "target_shift": (target_logits - logits).abs().max(),
        "match_kl": kl_to_target(F.softmax(target_logits, dim=-1), logits),
    }


def gradient_ratio(numerator: torch.Tensor, denominator: torch.Tensor, parameters) -> torch.Tensor:
    """‖∇θ numerator‖ / ‖∇θ denominator‖ over the meta-parameters (0 where the numerator has no gradient)."""
    params = [p for p in parameters if p.requires_grad]

    def norm(term):
        if not term.requires_grad:
            return torch.zeros(())
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None))

    return norm(numerator) / norm(denominator).clamp_min(1e-12)
