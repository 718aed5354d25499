"""Heads, CI maths and the embedding-cache evaluation against a naive per-episode computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.config import EvalConfig
from harness.episodes import sample_episodes
from harness.evaluation import ci95, evaluate
from harness.heads import LogRegHead, PrototypeHead, prototypes


def test_prototype_head_matches_hand_computation():
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]])  # class 0: (0,0),(2,0) → mean (1,0); class 1: (0,4)
    labels = torch.tensor([[0, 0, 1]])
    query = torch.tensor([[[1.0, 1.0], [0.0, 3.0]]])
    assert torch.equal(prototypes(support, labels, 2), torch.tensor([[[1.0, 0.0], [0.0, 4.0]]]))
    logits = PrototypeHead("euclidean")(support, labels, query, 2)
    assert torch.allclose(logits, torch.tensor([[[-1.0, -10.0], [-10.0, -1.0]]]))
    cosine = PrototypeHead("cosine")(support, labels, query, 2)
    assert torch.allclose(cosine, torch.tensor([[[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]]))


def test_logreg_head_fits_separable_episodes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 5, 16, generator=generator) * 3  # 8 episodes, 5 classes
    labels = torch.arange(5).repeat_interleave(3).expand(8, -1)
    support = centres.gather(1, labels[..., None].expand(-1, -1, 16)) + 0.3 * torch.randn(
        8, 15, 16, generator=generator
    )
    query_labels = torch.arange(5).repeat(4).expand(8, -1)
    query = centres.gather(1, query_labels[..., None].expand(-1, -1, 16)) + 0.3 * torch.randn(
        8, 20, 16, generator=generator
    )
    logits = LogRegHead(**EvalConfig(head="logreg").head_settings())(support, labels, query, 5)
    assert logits.shape == (8, 20, 5) and (logits.argmax(-1) == query_labels).all()


def test_ci95_is_the_normal_interval_of_the_mean():
    values = np.array([0.5, 0.7, 0.6, 0.9])
    assert ci95(values) == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    assert ci95(np.array([0.8])) == 0.0


class Flatten(torch.nn.Module):
    """A minimal embedding 'method' for the evaluation (embed = normalised flattened pixels)."""

    def embed(self, images):
        return images.float().flatten(1) / 255


def test_cached_embeddings_score_like_naive_episodes():
    torch.manual_seed(0)
    labels = np.repeat(np.arange(12), 6)
    images = (torch.rand(len(labels), 1, 5, 5) * 60 + torch.as_tensor(labels).view(-1, 1, 1, 1) * 15).to(torch.uint8)
    episodes = sample_episodes(labels, 4, 2, 3, 50, seed=0, identity="toy")
    result = evaluate(Flatten(), images, episodes, "prototype")
    naive = []
    for s, sl, q, ql in zip(episodes.support, episodes.support_labels, episodes.query, episodes.query_labels):
        feats = images.float().flatten(1) / 255
        protos = torch.stack([feats[s[sl == c]].mean(0) for c in range(4)])
        predicted = torch.cdist(feats[q], protos).argmin(1).numpy()
        naive.append((predicted == ql).mean())
    assert np.allclose(result.accuracies, naive)
    assert result.correct.shape == (50, 12) and result.mean == pytest.approx(np.mean(naive))
