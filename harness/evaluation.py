"""Scoring a method on fixed episodes: per-episode accuracy, per-query correctness, mean and 95% CI.

Frozen encoders embed every image the episodes use exactly once; all episodes are then scored from
that cache in batches. The ``adapt`` head hands batches of episodes to ``Method.solve_episodes``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.catalog import HEADS
from harness.episodes import Episodes
from harness.heads import AdaptHead
from harness.method import Method

EPISODE_BATCH = 200
ADAPT_BATCH = 10


@dataclass
class EvalResult:
    """Scores on a set of episodes."""

    accuracies: np.ndarray  # [E] fraction of queries correct per episode
    correct: np.ndarray  # [E, M] bool, per query ("trial")
    head: str
    seconds: float

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def ci95(self) -> float:
        return ci95(self.accuracies)


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95% confidence interval of the mean: 1.96 · s / √n (s: sample std)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


@torch.no_grad()
def embed_all(method: Method, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Embeddings of ``images`` (uint8) in batches, the method in eval mode."""
    was_training = method.training
    method.eval()
    try:
        return torch.cat([method.embed(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)])
    finally:
        method.train(was_training)


def evaluate(
    method: Method, images: torch.Tensor, episodes: Episodes, head: str, batch_size: int = 512, **head_settings
) -> EvalResult:
    """Score ``method`` on ``episodes`` over ``images`` (uint8 N×C×H×W) with the named head, made with
    ``head_settings`` (``EvalConfig.head_settings()``: the prototype head's distance, logreg's steps, lr, l2)."""
    started = time.perf_counter()
    head_impl = HEADS.get(head).load()
    if head_impl is AdaptHead:
        logits = _solve(method, images, episodes)
    else:
        used = np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()]))
        feats = embed_all(method, images[torch.as_tensor(used)], batch_size)
        position = np.full(len(images), -1, dtype=np.int64)
        position[used] = np.arange(len(used))
        scorer = head_impl(**head_settings)
        logits = []
        for start in range(0, len(episodes), EPISODE_BATCH):
            chunk = slice(start, start + EPISODE_BATCH)
            support = feats[torch.as_tensor(position[episodes.support[chunk]])]
            query = feats[torch.as_tensor(position[episodes.query[chunk]])]
            labels = torch.tensor(episodes.support_labels[chunk], device=feats.device)
            logits.append(scorer(support, labels, query, episodes.ways).cpu())
        logits = torch.cat(logits)
    predictions = logits.argmax(-1).numpy()
    correct = predictions == episodes.query_labels
    return EvalResult(correct.mean(axis=1), correct, head, time.perf_counter() - started)


def _solve(method: Method, images: torch.Tensor, episodes: Episodes) -> torch.Tensor:
    out = []
    for start in range(0, len(episodes), ADAPT_BATCH):
        chunk = slice(start, start + ADAPT_BATCH)
        support = images[torch.as_tensor(episodes.support[chunk])]
        query = images[torch.as_tensor(episodes.query[chunk])]
        labels = torch.as_tensor(episodes.support_labels[chunk])
        out.append(method.solve_episodes(support, labels, query, episodes.ways).float().cpu())
    return torch.cat(out)
