"""Supervised pre-training, the literature's strongest simple baseline (Tian et al. 2020, "Rethinking
Few-Shot Image Classification: a Good Embedding Is All You Need?"; Chen et al. 2019, "A Closer Look at
Few-shot Classification", Baseline): a backbone + a linear classifier over ALL training classes, trained
with cross-entropy on mini-batches of ``train.batch_size`` labelled images (no augmentation); the
classifier is then dropped and the frozen encoder's features are scored on the episodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import EncoderMethod
from harness.samplers import sample_images


@dataclass
class SupervisedConfig:
    backbone: str = "conv4"


class Supervised(EncoderMethod):
    Config = SupervisedConfig
    uses_labels = True
    default_head = "prototype"

    def __init__(self, cfg: SupervisedConfig, env):
        super().__init__(cfg, env)
        self.classifier = None  # its size is the training classes': made in setup

    def build_classifier(self, classes: int) -> None:
        self.classifier = nn.Linear(self.feature_dim, classes).to(self.env.device)

    def setup(self, data) -> None:
        self.build_classifier(data.num_classes)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.classifier is None and "classifier.weight" in state_dict:  # a trained run scored again: no setup
            self.build_classifier(state_dict["classifier.weight"].shape[0])
        return super().load_state_dict(state_dict, strict, assign)

    def training_step(self, data, step, progress, generator):
        index = sample_images(len(data.images), self.env.batch_size, generator).to(data.images.device)
        return self.loss(self.normalize(data.images[index]), data.labels[index])

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Cross-entropy over all training classes of normalised images."""
        logits = self.classifier(self.encoder(images).flatten(1))
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(1) == labels).float().mean()}
