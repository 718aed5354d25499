"""CACTUs: Clustering to Automatically Construct Tasks for Unsupervised meta-learning (Hsu, Levine &
Finn, ICLR 2019), with ProtoNet (``cactus-protonet``) or MAML (``cactus-maml``) as the meta-learner.

1. An unsupervised embedding of the unlabeled training images. The paper used ACAI, BiGAN or
   DeepCluster; here the harness's own ``encoder`` (``simclr`` or ``byol``, with that method's
   default settings and the run's ``views.*``), either trained within the run for its first
   ``encoder_steps`` steps (the record's config says so; one schedule spans the whole run) or loaded
   from a finished run's checkpoint (``encoder_run``: its directory; ``encoder_steps`` must be 0).
2. ``partitions`` (P) k-means clusterings (scipy's ``kmeans2``, k-means++ seeding, ``clusters`` = k)
   of those embeddings, each after scaling every embedding dimension by a factor drawn uniformly from
   [0, 1] (the paper's random scaling, which makes the partitions differ). They are computed once,
   when meta-training starts, from the run's generator, and kept in the checkpoint.
3. Meta-training from scratch on the images, on tasks drawn from the pseudo-labels: each task picks
   a partition, then N clusters with enough members, then shots + queries images of each — exactly
   as ``protonet`` / ``maml`` train on labelled tasks (their settings: ``train_ways``, ``train_shots``,
   ``train_queries``, inner loop, ...). Evaluation is theirs too. No label is used anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from harness.config import at_least
from harness.errors import ConfigError
from harness.method import TrainData
from harness.methods.maml import MAML, MAMLConfig
from harness.methods.protonet import ProtoNet, ProtoNetConfig
from harness.samplers import EpisodeSampler

EMBED_CHUNK = 512  # images embedded per forward pass when clustering


@dataclass
class CactusConfig:
    """The embedding (``encoder`` trained for ``encoder_steps`` here, or taken from ``encoder_run``) and
    the pseudo-labels: ``partitions`` k-means partitions into ``clusters`` clusters."""

    encoder: Literal["simclr", "byol"] = "simclr"
    encoder_steps: int = field(default=1000, metadata=at_least(0))
    encoder_run: str = ""
    encoder_batch_size: int = field(default=256, metadata=at_least(2))
    partitions: int = field(default=100, metadata=at_least(1))
    clusters: int = field(default=500, metadata=at_least(2))
    kmeans_iterations: int = field(default=20, metadata=at_least(1))


class Cactus:
    """The CACTUs part, mixed into a meta-learner that samples its tasks with ``self.sampler``."""

    uses_labels = False
    uses_views = True
    splits = ""  # one process: the embedding phase has no split

    @classmethod
    def check_config(cls, run, benchmark) -> None:
        """CACTUs' own settings; its tasks' classes are clusters, so the meta-learner's check of labelled
        training classes does not apply, and its ways are checked against ``method.clusters`` instead."""
        cfg = run.method
        key, ways = cls.training_ways(run)
        if ways > cfg.clusters:
            raise ConfigError(
                f"method.clusters={cfg.clusters}: a {ways}-way training task ({key}={ways}) needs {ways} "
                f"clusters in a partition; raise method.clusters to at least {ways} or lower {key}"
            )
        if bool(cfg.encoder_run) == bool(cfg.encoder_steps):
            raise ConfigError(
                f"CACTUs takes its embedding from either method.encoder_steps (train {cfg.encoder} "
                f"within the run) or method.encoder_run (a finished {cfg.encoder} run's directory), "
                f"got encoder_steps={cfg.encoder_steps} and encoder_run={cfg.encoder_run!r}; "
                f"set exactly one (encoder_steps=0 with encoder_run)"
            )
        if cfg.encoder_steps and run.train.steps <= cfg.encoder_steps:
            raise ConfigError(
                f"train.steps={run.train.steps} leaves no meta-training after method.encoder_steps="
                f"{cfg.encoder_steps}; raise train.steps or lower method.encoder_steps"
            )
        if cfg.encoder_run and not (Path(cfg.encoder_run) / "checkpoint.pt").is_file():
            raise ConfigError(
                f"method.encoder_run={cfg.encoder_run}: no checkpoint.pt there; give the directory of "
                f"a finished {cfg.encoder} run on this benchmark"
            )

    def __init__(self, cfg, env):
        super().__init__(cfg, env)
        from harness.methods import METHODS

        encoder_class = METHODS.get(cfg.encoder).load()
        encoder_cfg = encoder_class.Config(backbone=cfg.backbone)
        self.embedding = encoder_class(encoder_cfg, replace(env, batch_size=cfg.encoder_batch_size))

    def setup(self, data) -> None:
        self.embedding.setup(TrainData(data.images, None, None))
        if self.cfg.encoder_run:
            self.load_encoder(Path(self.cfg.encoder_run))
        empty = torch.full((self.cfg.partitions, len(data.images)), -1, dtype=torch.long, device=self.env.device)
        self.register_buffer("partition_labels", empty)  # filled when meta-training starts; checkpointed
        self.sampler = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "partition_labels" in state_dict and not hasattr(self, "partition_labels"):  # scored again: no setup
            self.register_buffer(
                "partition_labels", torch.empty_like(state_dict["partition_labels"], device=self.env.device)
            )
        return super().load_state_dict(state_dict, strict, assign)

    def load_encoder(self, run_dir: Path) -> None:
        from harness.checkpoint import RESUME_FIX, read_checkpoint

        state = read_checkpoint(run_dir / "checkpoint.pt", self.env.device, RESUME_FIX)
        try:
            self.embedding.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ConfigError(
                f"method.encoder_run={run_dir}: its checkpoint is not a {self.cfg.encoder} model of this "
                f"shape ({str(exc).splitlines()[0]}); give a {self.cfg.encoder} run with method.backbone="
                f"{self.cfg.backbone}"
            ) from None

    # ------------------------------------------------------------------ pseudo-labels
    @torch.no_grad()
    def embed_training_images(self, images: torch.Tensor) -> np.ndarray:
        was_training = self.embedding.training
        self.embedding.eval()
        features = torch.cat([self.embedding.embed(chunk) for chunk in images.split(EMBED_CHUNK)])
        self.embedding.train(was_training)
        return features.float().cpu().numpy().astype(np.float64)

    def make_partitions(self, features: np.ndarray, seed: int) -> torch.Tensor:
        """[P, n] cluster ids: k-means of the features, each dimension randomly scaled, P times."""
        from scipy.cluster.vq import kmeans2

        rng = np.random.default_rng(seed)
        labels = []
        for _ in range(self.cfg.partitions):
            scaled = features * rng.uniform(0.0, 1.0, size=features.shape[1])
            _, assignment = kmeans2(scaled, self.cfg.clusters, iter=self.cfg.kmeans_iterations, minit="++", seed=rng)
            labels.append(torch.as_tensor(assignment, dtype=torch.long))
        return torch.stack(labels)

    def task_sampler(self, ways: int, shots: int, queries: int) -> "PartitionSampler":
        samplers = []
        for p, labels in enumerate(self.partition_labels.cpu()):
            try:
                samplers.append(EpisodeSampler(labels, ways, shots, queries))
            except ConfigError as exc:
                raise ConfigError(
                    f"CACTUs partition {p} of {self.cfg.clusters} k-means clusters: {exc} Or lower "
                    f"method.clusters, so that clusters are larger."
                ) from None
        return PartitionSampler(samplers)

    # ------------------------------------------------------------------ training
    @classmethod
    def phase_starts(cls, cfg) -> list[int]:
        return [0, cfg.encoder_steps] if cfg.encoder_steps else [0]

    def training_step(self, data, step, progress, generator):
        if step < self.cfg.encoder_steps:
            return self.embedding.training_step(data, step, step / self.cfg.encoder_steps, generator)
        if self.sampler is None:
            if (self.partition_labels < 0).any():  # not restored from a checkpoint: cluster now
                seed = int(torch.randint(2**31, (1,), generator=generator))
                self.partition_labels.copy_(self.make_partitions(self.embed_training_images(data.images), seed))
            self.sampler = self.task_sampler(*self.task_shape())
        return super().training_step(data, step, progress, generator)


class PartitionSampler:
    """``EpisodeSampler``'s API over several partitions: each task comes from a random one."""

    def __init__(self, samplers: list[EpisodeSampler]):
        self.samplers = samplers

    def sample(self, generator: torch.Generator, batch: int = 1):
        picks = torch.randint(len(self.samplers), (batch,), generator=generator).tolist()
        tasks = [self.samplers[p].sample(generator, 1) for p in picks]
        return tuple(torch.cat(parts) for parts in zip(*tasks))


@dataclass
class CactusProtoNetConfig(CactusConfig, ProtoNetConfig):
    """ProtoNet's settings and CACTUs'."""


class CactusProtoNet(Cactus, ProtoNet):
    Config = CactusProtoNetConfig

    def task_shape(self) -> tuple[int, int, int]:
        return self.ways, self.shots, self.cfg.train_queries


@dataclass
class CactusMAMLConfig(CactusConfig, MAMLConfig):
    """MAML's settings and CACTUs'."""


class CactusMAML(Cactus, MAML):
    Config = CactusMAMLConfig

    def task_shape(self) -> tuple[int, int, int]:
        return self.ways, self.cfg.train_shots or self.env.shots, self.cfg.train_queries
