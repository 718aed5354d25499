"""Fixed test episodes: generated from (labels, protocol, seed) with an explicit, version-stable RNG.

The generator is numpy's Philox-4x64 counter-based bit generator keyed directly with the seed;
only its raw 64-bit output is used (``random_raw``), and every choice is "sort random keys, take
the smallest" with a stable sort. Neither depends on numpy's distribution code, so the episodes are
identical in every process, run, method and numpy version. ``Episodes.digest`` fingerprints them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError

ALGORITHM_VERSION = 1
CHUNK = 256  # episodes drawn per block of keys (part of the algorithm: changing it changes episodes)
_NEVER = np.iinfo(np.uint64).max


@dataclass(frozen=True)
class Episodes:
    """A set of N-way K-shot episodes as indices into one split's images.

    ``support``/``query`` are int64 [E, N·K] / [E, M] image indices; ``*_labels`` are episode-local
    class ids in 0..N-1 (support is class-major: class 0's K shots, then class 1's, ...).
    """

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    ways: int
    shots: int
    digest: str

    @classmethod
    def build(cls, support, support_labels, query, query_labels, ways: int, shots: int, identity: str) -> "Episodes":
        arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in (support, support_labels, query, query_labels)]
        h = hashlib.sha256(f"v{ALGORITHM_VERSION}|{identity}|{ways}|{shots}|".encode())
        for a in arrays:
            h.update(str(a.shape).encode())
            h.update(a.astype("<i8").tobytes())
        return cls(*arrays, ways=ways, shots=shots, digest=h.hexdigest()[:16])

    def __len__(self) -> int:
        return len(self.support)

    @property
    def queries_per_episode(self) -> int:
        return self.query.shape[1]


def class_members(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of each class, padded: ([classes, max_count] with -1 padding, counts)."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    members = np.full((num_classes, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in range(num_classes):
        members[c, : counts[c]] = order[starts[c] : starts[c] + counts[c]]
    return members, counts


def eligible_classes(
    labels: np.ndarray, num_classes: int, ways: int, per_class: int, what: str, fix: str
) -> tuple[np.ndarray, np.ndarray]:
    """(members, eligible): each class's image indices (``class_members``) and whether it has
    ``per_class`` images; fewer than ``ways`` eligible classes is a ConfigError (``what`` needs them, ``fix``)."""
    members, counts = class_members(labels, num_classes)
    eligible = counts >= per_class
    if eligible.sum() < ways:
        largest = np.sort(counts)[::-1]
        most_images = int(largest[ways - 1]) if ways <= len(largest) else 0
        raise ConfigError(
            f"{what} need {ways} classes with at least {per_class} images; only {int(eligible.sum())} "
            f"have that many. Here {per_class} images per class allow at most {int(eligible.sum())}-way "
            f"episodes, and {ways}-way episodes at most {most_images} images per class (shots + "
            f"queries). {fix}"
        )
    return members, eligible


def sample_episodes(
    labels,
    ways: int,
    shots: int,
    queries: int,
    count: int,
    seed: int,
    identity: str,
    class_groups=None,
) -> Episodes:
    """Draw ``count`` episodes; with ``class_groups``, each episode's classes share one group
    (e.g. Lake's within-alphabet protocol)."""
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    members, eligible = eligible_classes(
        labels,
        num_classes,
        ways,
        shots + queries,
        f"{identity}: {ways}-way {shots}-shot episodes with {queries} queries",
        "Lower bench.ways, bench.shots or bench.queries.",
    )
    groups = None if class_groups is None else np.asarray(class_groups, dtype=np.int64)
    if groups is not None:
        per_group = np.bincount(groups[eligible], minlength=int(groups.max()) + 1)
        usable_groups = np.flatnonzero(per_group >= ways)
        if len(usable_groups) == 0:
            raise ConfigError(f"{identity}: no group has {ways} classes with {shots + queries} images each")

    bitgen = np.random.Philox(key=seed)
    per_class = shots + queries
    support, query = [], []
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        class_keys = bitgen.random_raw(n * num_classes).reshape(n, num_classes)
        class_keys[:, ~eligible] = _NEVER
        if groups is not None:
            group_keys = bitgen.random_raw(n * len(usable_groups)).reshape(n, len(usable_groups))
            chosen_group = usable_groups[np.argsort(group_keys, axis=1, kind="stable")[:, 0]]
            class_keys[groups[None, :] != chosen_group[:, None]] = _NEVER
        chosen = np.argsort(class_keys, axis=1, kind="stable")[:, :ways]  # [n, N]
        item_keys = bitgen.random_raw(n * ways * members.shape[1]).reshape(n, ways, members.shape[1])
        item_keys[members[chosen] < 0] = _NEVER
        picks = np.argsort(item_keys, axis=2, kind="stable")[:, :, :per_class]
        items = np.take_along_axis(members[chosen], picks, axis=2)  # [n, N, K+Q]
        support.append(items[:, :, :shots].reshape(n, ways * shots))
        query.append(items[:, :, shots:].reshape(n, ways * queries))
    episode_labels = np.arange(ways)
    return Episodes.build(
        support=np.concatenate(support),
        support_labels=np.broadcast_to(np.repeat(episode_labels, shots), (count, ways * shots)),
        query=np.concatenate(query),
        query_labels=np.broadcast_to(np.repeat(episode_labels, queries), (count, ways * queries)),
        ways=ways,
        shots=shots,
        identity=identity,
    )
