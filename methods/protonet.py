"""Prototypical Networks (Snell et al. 2017) on learn2learn.

Episodic training with the harness's tensor sampler: prototypes are the class means of the support
embeddings and the logits are negative squared euclidean distances (learn2learn's
``PrototypicalClassifier``). Training ways/shots/queries are set apart from the test protocol
(Snell et al. train 60-way on Omniglot). Evaluated with the ``prototype`` head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from harness.backbones import build_backbone
from harness.catalog import BACKBONES
from harness.config import at_least
from harness.libs import learn2learn
from harness.method import Method, make_optimizer
from harness.resolve import check_training_classes
from harness.samplers import EpisodeSampler


@dataclass
class ProtoNetConfig:
    """``train_*`` = 0 takes the benchmark's value."""

    backbone: str = "conv4"
    train_ways: int = field(default=0, metadata=at_least(0))
    train_shots: int = field(default=0, metadata=at_least(0))
    train_queries: int = field(default=15, metadata=at_least(1))
    distance: Literal["euclidean", "cosine"] = "euclidean"


def prototype_logits(support, support_labels, query, distance: str = "euclidean") -> torch.Tensor:
    """Logits of ``query`` [M, D] against the class means of ``support`` [S, D] (learn2learn's
    ``PrototypicalClassifier``): negative squared euclidean distance, or cosine similarity."""
    classifier = learn2learn().nn.PrototypicalClassifier(support, support_labels, distance=distance)
    return classifier(query)


class ProtoNet(Method):
    Config = ProtoNetConfig

    @classmethod
    def check_config(cls, run) -> None:
        BACKBONES.get(run.method.backbone)
        key = "method.train_ways" if run.method.train_ways else "bench.ways"
        check_training_classes(run, key, run.method.train_ways or run.bench.ways)

    def __init__(self, cfg: ProtoNetConfig, env):
        super().__init__(cfg, env)
        self.encoder, self.feature_dim = build_backbone(cfg.backbone, env.channels, env.image_size)
        self.encoder.to(memory_format=torch.channels_last)
        self.ways = cfg.train_ways or env.run.bench.ways
        self.shots = cfg.train_shots or env.run.bench.shots

    def setup(self, data) -> None:
        self.sampler = EpisodeSampler(data.labels.cpu(), self.ways, self.shots, self.cfg.train_queries)
        self.optimizer = make_optimizer(self.encoder.parameters(), self.env.train)

    def optimizers(self):
        return {"encoder": self.optimizer}

    def training_step(self, data, step, generator):
        support, support_labels, query, query_labels = (t[0].to(data.images.device) for t in self.sampler.sample(generator))
        images = self.normalize(data.images[torch.cat([support, query])])
        return self.update(images[: len(support)], support_labels, images[len(support):], query_labels)

    def update(self, support, support_labels, query, query_labels) -> dict:
        """One optimisation step on an episode (normalised images and episode labels)."""
        features = self.encoder(torch.cat([support, query])).flatten(1)
        logits = prototype_logits(features[: len(support)], support_labels, features[len(support):], self.cfg.distance)
        loss = F.cross_entropy(logits, query_labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "accuracy": (logits.argmax(1) == query_labels).float().mean()}

    @torch.no_grad()
    def embed(self, images):
        return self.encoder(self.normalize(images)).flatten(1)
