"""Prototypical Networks (Snell et al. 2017) on learn2learn.

Episodic training with the harness's tensor sampler: prototypes are the class means of the support
embeddings and the logits are negative squared euclidean distances (learn2learn's
``PrototypicalClassifier``). Training ways/shots/queries are set apart from the test protocol
(Snell et al. train 60-way on Omniglot). ``train.batch_size`` episodes per step (tasks per step, as for
every episodic method) are each forwarded on their own and their losses averaged; their batch-norm running statistics move once per step, towards the
episodes' mean (``meta_batch_statistics``, so that the tasks can be split over processes). Evaluated
with the ``prototype`` head."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from harness.config import at_least
from harness.distributed import meta_batch_statistics
from harness.heads import prototypes
from harness.libs import learn2learn
from harness.method import EncoderMethod
from harness.samplers import EpisodeSampler


@dataclass
class ProtoNetConfig:
    """``train_*`` = 0 takes the benchmark's value."""

    backbone: str = "conv4"
    train_ways: int = field(default=0, metadata=at_least(0))
    train_shots: int = field(default=0, metadata=at_least(0))
    train_queries: int = field(default=15, metadata=at_least(1))
    distance: Literal["euclidean", "cosine"] = "euclidean"


def prototype_logits(support, support_labels, query, ways: int, distance: str = "euclidean") -> torch.Tensor:
    """Logits of ``query`` [M, D] against the class means of ``support`` [S, D] (the harness's one
    ``prototypes``) under learn2learn's ``PrototypicalClassifier`` distances: negative squared
    euclidean distance, or cosine similarity of L2-normalised vectors."""
    classifier = learn2learn().nn.PrototypicalClassifier
    protos = prototypes(support[None], support_labels[None], ways)[0]
    if distance == "cosine":
        return -classifier.cosine_distance(classifier.normalize(protos), classifier.normalize(query))
    return -classifier.euclidean_distance(protos, query)


class ProtoNet(EncoderMethod):
    Config = ProtoNetConfig
    splits = "tasks"  # several processes: a share of the meta-batch's episodes each

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        benchmark.check_training_classes(run, *cls.training_ways(run))

    @staticmethod
    def training_ways(run) -> tuple[str, int]:
        """The setting that gives a training episode's ways, and its value."""
        return ("method.train_ways", run.method.train_ways) if run.method.train_ways else ("bench.ways", run.bench.ways)

    def __init__(self, cfg: ProtoNetConfig, env):
        super().__init__(cfg, env)
        self.ways = cfg.train_ways or env.ways
        self.shots = cfg.train_shots or env.shots

    def setup(self, data) -> None:
        self.sampler = EpisodeSampler(data.labels.cpu(), self.ways, self.shots, self.cfg.train_queries)

    def training_step(self, data, step, progress, generator):
        """The mean loss of ``train.batch_size`` episodes (this process's share of them)."""
        episodes = self.sampler.sample(generator, self.env.batch_size)
        world, losses = self.env.world, []
        several = self.env.batch_size > 1 or world.size > 1
        with meta_batch_statistics(self.encoder, world) if several else nullcontext():
            for support, support_labels, query, query_labels in zip(*(world.shard(t) for t in episodes)):
                support, support_labels, query, query_labels = (
                    t.to(data.images.device) for t in (support, support_labels, query, query_labels)
                )
                images = self.normalize(data.images[torch.cat([support, query])])
                losses.append(self.loss(images[: len(support)], support_labels, images[len(support) :], query_labels))
        return {k: torch.stack([out[k] for out in losses]).mean() for k in losses[0]}

    def loss(self, support, support_labels, query, query_labels) -> dict:
        """The query cross-entropy of an episode (normalised images and episode labels)."""
        features = self.encoder(torch.cat([support, query])).flatten(1)
        logits = prototype_logits(
            features[: len(support)], support_labels, features[len(support) :], self.ways, self.cfg.distance
        )
        return {
            "loss": F.cross_entropy(logits, query_labels),
            "accuracy": (logits.argmax(1) == query_labels).float().mean(),
        }
