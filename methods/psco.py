"""PsCo (Jang, Lee, Shin, Kim & Shin 2023, "Unsupervised Meta-Learning via Few-shot Pseudo-supervised
Contrastive Learning", ICLR; reference code github.com/alinlab/PsCo, ``models.py: PsCoMoCo``) on lightly.

An online encoder f + projector g (``MoCoProjectionHead`` with batch norm, as the authors' 2-layer MLP)
+ predictor h (``BYOLPredictionHead``), and a momentum copy of f and g (harness/momentum.py: ``update_momentum`` with the
``cosine_schedule`` of the momentum from ``momentum_base`` to 1 over training progress, as moco.py; the
authors keep it at 0.99). A FIFO queue of the last ``queue_size`` momentum keys. Each step, a batch of N
unlabeled images in two views:

- queries q = normalize(h(g(f(view 1)))), keys z = normalize(g_m(f_m(view 2))) (no gradient);
- pseudo-labels: Sinkhorn-Knopp (lightly's ``sinkhorn``, as SwAV; ``sinkhorn_iterations`` at
  ``sinkhorn_epsilon``) on the N×M key–queue similarities gives an assignment whose rows (images) sum
  to 1 and whose columns (queue entries) are balanced (each ≈ N/M); image i's support set is its
  ``shots`` (K) most-assigned queue entries: an N-way K-shot pseudo-task whose queries are the q's;
- loss: the supervised contrastive loss of each query against the N·K supports (positives: its own K),
  −1/K Σ_k log(exp(q_i·s_ik/τ_s) / Σ_jl exp(q_i·s_jl/τ_s)) at ``supcon_temperature`` τ_s (the authors'
  ``temperature2``, 1), plus ``moco_weight`` × MoCo's InfoNCE of q against its key and the queue at
  ``temperature`` (0.2), as in the authors' code; then the keys enter the queue.

The queue (``queue``, ``queue_ptr``) is registered as persistent buffers: it is in ``state_dict`` and
so in checkpoints, and a resumed run continues with the same queue. Changes from the reference code:
the momentum schedule (above); the projector's last batch norm is lightly's (affine); the two views are
the run's ``views.*`` (the authors use one strong and one weak view on miniImageNet, alike on Omniglot);
the queue also works when the batch size does not divide it (wrap-around). Evaluation embeds with the
online encoder's features (SelfSupervised's ``embed``; the authors' "supcon" metric compares the
projected supports with the predicted queries, which the harness's shared heads cannot express)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.config import at_least, positive
from harness.errors import ConfigError
from harness.momentum import MomentumTargets
from harness.ssl import SelfSupervised


@dataclass
class PsCoConfig:
    """The networks, queue, pseudo-tasks (Sinkhorn-Knopp, K shots), momentum and temperatures; the
    defaults are the authors' miniImageNet settings (views: the run's ``views.*``)."""

    backbone: str = "conv4"
    projection_hidden: int = field(default=4096, metadata=at_least(1))
    projection_dim: int = field(default=256, metadata=at_least(1))
    prediction_hidden: int = field(default=4096, metadata=at_least(1))
    queue_size: int = field(default=16384, metadata=at_least(1))
    shots: int = field(default=4, metadata=at_least(1))  # K: support entries per pseudo-class
    supcon_temperature: float = field(default=1.0, metadata=positive())  # τ of the pseudo-supervised loss
    temperature: float = field(default=0.2, metadata=positive())  # τ of the MoCo term
    moco_weight: float = field(default=1.0, metadata=at_least(0))  # 0: the pseudo-supervised loss alone
    momentum_base: float = field(default=0.99, metadata={"min": 0, "max": 1})
    sinkhorn_iterations: int = field(default=3, metadata=at_least(1))
    sinkhorn_epsilon: float = field(default=0.05, metadata=positive())


def sinkhorn_assignment(similarity: torch.Tensor, iterations: int, epsilon: float) -> torch.Tensor:
    """Sinkhorn-Knopp on N×M similarities (keys × queue): an N×M assignment, rows summing to 1 and
    columns balanced (each ≈ N/M), computed in float32 (exp(s/ε) overflows half precision)."""
    from lightly.loss.swav_loss import sinkhorn

    return sinkhorn(similarity.float(), iterations=iterations, epsilon=epsilon)


def select_shots(assignment: torch.Tensor, shots: int) -> torch.Tensor:
    """Each row's ``shots`` most-assigned queue entries (N×K indices, most assigned first)."""
    return torch.topk(assignment, k=shots, dim=1).indices


def supcon_loss(queries: torch.Tensor, supports: torch.Tensor, temperature: float) -> torch.Tensor:
    """The pseudo-supervised contrastive loss of N queries against an N-way K-shot support set
    (``supports``: N×K×D, row i the positives of query i; all on the unit sphere): the mean over queries
    of −1/K Σ_k log softmax over all N·K supports of q·s/τ at the query's own k-th support."""
    n, k, _ = supports.shape
    logits = queries @ supports.reshape(n * k, -1).T / temperature  # N × NK
    own = logits.view(n, n, k)[torch.arange(n, device=logits.device), torch.arange(n, device=logits.device)]  # N × K
    return (logits.logsumexp(dim=1) - own.mean(dim=1)).mean()


class PsCo(MomentumTargets, SelfSupervised):
    Config = PsCoConfig
    momentum_pairs = (("encoder", "key_encoder"), ("projection", "key_projection"))

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        super().check_config(run, benchmark)
        cfg, batch = run.method, run.train.batch_size
        if cfg.shots > cfg.queue_size:
            raise ConfigError(
                f"method.shots ({cfg.shots}) must be at most method.queue_size ({cfg.queue_size}): "
                f"each pseudo-class takes its shots from the queue"
            )
        if batch > cfg.queue_size:
            raise ConfigError(
                f"train.batch_size ({batch}) must be at most method.queue_size ({cfg.queue_size}): "
                f"every step's keys enter the queue, which must hold them"
            )
        if batch < 2:
            raise ConfigError(
                f"train.batch_size ({batch}) must be at least 2: a pseudo-task needs at least two "
                f"pseudo-classes (and batch norm two samples)"
            )

    def __init__(self, cfg: PsCoConfig, env):
        super().__init__(cfg, env)
        from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead

        self.projection = MoCoProjectionHead(
            self.feature_dim, cfg.projection_hidden, cfg.projection_dim, batch_norm=True
        )
        self.prediction = BYOLPredictionHead(cfg.projection_dim, cfg.prediction_hidden, cfg.projection_dim)
        self.make_targets()
        # As the authors' code: the queue starts as random unit vectors (replaced within M/N steps).
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: the keys replace the oldest entries (wrapping around the end of the queue)."""
        size = len(self.queue)
        index = (int(self.queue_ptr) + torch.arange(len(keys), device=self.queue.device)) % size
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + len(keys)) % size)

    @torch.no_grad()
    def pseudo_task(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pseudo-task of a batch of keys: its N×K support indices into the queue and the
        Sinkhorn-Knopp assignment (N×M) they were taken from."""
        assignment = sinkhorn_assignment(keys @ self.queue.T, self.cfg.sinkhorn_iterations, self.cfg.sinkhorn_epsilon)
        return select_shots(assignment, self.cfg.shots), assignment

    def loss(self, views, progress):
        """Momentum update, then the pseudo-supervised contrastive loss of the queries (view 1) on the
        pseudo-task built from their keys (view 2) and the queue, plus MoCo's InfoNCE; then the keys
        enter the queue."""
        cfg = self.cfg
        m = self.update_targets(progress)
        q = F.normalize(self.prediction(self.projection(self.encoder(views[0]).flatten(1))), dim=1)
        with torch.no_grad():
            z = F.normalize(self.key_projection(self.key_encoder(views[1]).flatten(1)), dim=1)
            queue = self.queue.clone()
            shots, assignment = self.pseudo_task(z)
            supports = queue[shots]  # N × K × D
        q32, z32 = q.float(), z.float()
        pseudo = supcon_loss(q32, supports, cfg.supcon_temperature)
        out = {"pseudo_loss": pseudo.detach(), "momentum": m, "assigned_max": assignment.max(dim=1).values.mean()}
        loss = pseudo
        if cfg.moco_weight:
            logits = torch.cat([(q32 * z32).sum(1, keepdim=True), q32 @ queue.T], dim=1) / cfg.temperature
            moco = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
            loss = loss + cfg.moco_weight * moco
            out["moco_loss"] = moco.detach()
        self.enqueue(z)
        out["loss"] = loss
        return out
