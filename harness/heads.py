"""Evaluation heads: how an episode's query embeddings are classified from its support set.

Embedding heads work on batches of episodes at once (``[E, S, D]`` support, ``[E, M, D]`` queries →
``[E, M, N]`` logits). The ``adapt`` head is the hook for methods that adapt per episode (MAML): the
evaluation hands each episode's images to the method's own ``solve_episodes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototypes(support: torch.Tensor, support_labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means of the support embeddings: [E, S, D] → [E, N, D]."""
    one_hot = F.one_hot(support_labels, ways).to(support.dtype)  # [E, S, N]
    return one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)


class PrototypeHead:
    """Nearest class mean (Snell et al. 2017): negative squared euclidean distance, or cosine similarity."""

    def __init__(self, distance: str = "euclidean"):
        self.distance = distance

    def __call__(self, support, support_labels, query, ways: int) -> torch.Tensor:
        protos = prototypes(support, support_labels, ways)
        if self.distance == "cosine":
            return F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
        return -torch.cdist(query, protos).pow(2)


class LogRegHead:
    """Multinomial logistic regression fit on each episode's L2-normalised support embeddings
    (as in Tian et al. 2020), all episodes of a batch optimised together by full-batch Adam."""

    def __init__(self, steps: int, lr: float, l2: float):
        self.steps, self.lr, self.l2 = steps, lr, l2

    def __call__(self, support, support_labels, query, ways: int) -> torch.Tensor:
        support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        episodes, _, dim = support.shape
        weight = torch.zeros(episodes, dim, ways, device=support.device, requires_grad=True)
        bias = torch.zeros(episodes, 1, ways, device=support.device, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = support @ weight + bias
                loss = F.cross_entropy(logits.flatten(0, 1), support_labels.flatten(), reduction="sum") / episodes
                loss = loss + self.l2 * weight.pow(2).sum() / episodes
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return (query @ weight + bias).detach()


class AdaptHead:
    """Marker: the method solves each episode itself (``Method.solve_episodes``)."""
