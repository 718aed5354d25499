"""Fixed test episodes and the training sampler."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.episodes import sample_episodes
from harness.errors import ConfigError
from harness.samplers import EpisodeSampler

LABELS = np.repeat(np.arange(30), 12)


def test_same_seed_same_episodes_other_seed_other_episodes():
    a = sample_episodes(LABELS, 5, 2, 3, 100, seed=7, identity="x")
    b = sample_episodes(LABELS, 5, 2, 3, 100, seed=7, identity="x")
    c = sample_episodes(LABELS, 5, 2, 3, 100, seed=8, identity="x")
    assert a.digest == b.digest and np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert c.digest != a.digest and not np.array_equal(a.support, c.support)


def test_episode_digest_is_pinned():
    """The generator is part of the protocol: if this digest changes, published numbers stop being comparable."""
    assert sample_episodes(LABELS, 5, 1, 8, 600, seed=0, identity="pinned").digest == "e44cf516af30cdbe"


def test_episode_structure():
    eps = sample_episodes(LABELS, 5, 2, 3, 300, seed=1, identity="x")
    assert eps.support.shape == (300, 10) and eps.query.shape == (300, 15)
    for s, sl, q, ql in zip(eps.support, eps.support_labels, eps.query, eps.query_labels):
        assert len(set(s) | set(q)) == 25  # no image twice in an episode
        classes = LABELS[s].reshape(5, 2)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0])) == 5  # class-major, 5 distinct
        assert list(sl) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert all(classes[label, 0] == LABELS[image] for image, label in zip(q, ql))  # query labels are right
    # every class shows up across episodes
    assert set(LABELS[eps.support.ravel()]) == set(range(30))


def test_episodes_identical_in_another_process():
    code = (
        "import numpy as np; from harness.episodes import sample_episodes; "
        "print(sample_episodes(np.repeat(np.arange(30), 12), 5, 2, 3, 500, seed=3, identity='x').digest)"
    )
    digest = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert digest == sample_episodes(LABELS, 5, 2, 3, 500, seed=3, identity="x").digest


def test_within_group_episodes_draw_one_group():
    groups = np.repeat(np.arange(3), 10)  # 30 classes in 3 groups
    eps = sample_episodes(LABELS, 5, 1, 1, 200, seed=0, identity="x", class_groups=groups)
    for s in eps.support:
        assert len(set(groups[LABELS[s]])) == 1
    assert len({groups[LABELS[s[0]]] for s in eps.support}) == 3


def test_too_few_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="need 31 classes with at least 4 images"):
        sample_episodes(LABELS, 31, 1, 3, 10, seed=0, identity="x")
    with pytest.raises(ConfigError, match="only 0 have that many"):
        sample_episodes(LABELS, 5, 10, 3, 10, seed=0, identity="x")


def test_training_sampler_batches_are_valid_and_seeded():
    labels = torch.as_tensor(np.repeat(np.arange(40), np.arange(40) % 5 + 4))  # uneven class sizes 4..8
    sampler = EpisodeSampler(labels, ways=6, shots=2, queries=2)
    support, support_labels, query, query_labels = sampler.sample(torch.Generator().manual_seed(0), batch=50)
    assert support.shape == (50, 12) and query.shape == (50, 12)
    for s, sl, q, ql in zip(support, support_labels, query, query_labels):
        assert len(set(s.tolist()) | set(q.tolist())) == 24
        truth = labels[s].view(6, 2)[:, 0]
        assert len(set(truth.tolist())) == 6
        assert torch.equal(labels[s], truth[sl]) and torch.equal(labels[q], truth[ql])
    again = sampler.sample(torch.Generator().manual_seed(0), batch=50)
    assert torch.equal(again[0], support) and torch.equal(again[2], query)
    with pytest.raises(ConfigError, match="need 6 classes"):
        EpisodeSampler(labels, ways=6, shots=5, queries=4)
