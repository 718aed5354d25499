"""Benchmark protocols: a dataset + split + image size + N-way K-shot Q-query test episodes from a
seed (or the dataset's official episodes) + a default evaluation head, and the loading of a
benchmark's data as a run's configuration asks for it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.config import BenchConfig, RunConfig
from harness.data import get_dataset
from harness.data.base import Dataset, ImageSet, data_root
from harness.data.imagefolder import ImageFolder, ImageFolderSpec
from harness.episodes import Episodes, sample_episodes
from harness.errors import ConfigError, DataError, UnknownNameError

FRACTION_KEY = 0x5EED  # fixed Philox key of the train_fraction subsample (same subset for every run)
VAL_SEED_OFFSET = 1_000_003  # validation episodes never coincide with test episodes' seed


@dataclass(frozen=True)
class BenchmarkSpec:
    """One registered benchmark (see the YAML files in ``benchmarks/``)."""

    name: str
    description: str
    family: str
    dataset: str | ImageFolderSpec  # a registered dataset's name, or a benchmark file's image folder
    image_size: int
    splits: dict = field(default_factory=dict)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 2000
    episode_seed: int = 0
    head: str = "prototype"
    class_rotations: bool = False  # default of data.class_rotations (training classes ×4)
    test_rotations: bool = False  # test classes ×4 by rotation (part of the protocol)
    official_episodes: bool = False  # test episodes ship with the dataset; bench.* is fixed
    val_within_group: bool = False  # validation episodes draw all classes from one group
    source: str = ""  # the benchmark file it was read from ("" for the harness's own)

    def bench_config(self) -> BenchConfig:
        return BenchConfig(self.ways, self.shots, self.queries, self.episodes, self.episode_seed)

    def summary(self) -> dict:
        protocol = (
            "official episodes" if self.official_episodes else f"{self.episodes} episodes, seed {self.episode_seed}"
        )
        return {
            "protocol": f"{self.ways}-way {self.shots}-shot, {self.queries} queries/class, {protocol}",
            "dataset": str(self.dataset),
            "image_size": self.image_size,
            "head": self.head,
        }

    def check(self, bench: BenchConfig, dataset: Dataset) -> None:
        """Reject protocol values the benchmark cannot honour, before any data is loaded."""
        if self.official_episodes:
            for key, fixed in vars(self.bench_config()).items():
                if getattr(bench, key) != fixed:
                    raise ConfigError(
                        f"bench.{key} is fixed at {fixed} on {self.name}: its test episodes are the dataset's "
                        f"official ones. Remove the override, or pick a benchmark with sampled episodes."
                    )
            return
        missing = [
            f"{role} ({self.splits.get(role)})"
            for role in ("train", "test")
            if self.splits.get(role) not in dataset.splits
        ]
        if missing:
            raise DataError(
                f"{self.name} needs a train and a test split, and its dataset {dataset.name} has no "
                f"{' or '.join(missing)} split; it has {', '.join(dataset.splits) or 'none'}"
            )
        info = dataset.splits[self.splits["test"]]
        classes = info.classes * (4 if self.test_rotations else 1) if info.classes else None
        if classes is not None and bench.ways > classes:
            raise ConfigError(
                f"bench.ways={bench.ways} exceeds the {classes} test classes of {self.name}; use at most {classes}"
            )
        if info.per_class is not None and bench.shots + bench.queries > info.per_class:
            raise ConfigError(
                f"bench.shots + bench.queries = {bench.shots + bench.queries} exceeds the {info.per_class} images per "
                f"test class of {self.name}"
                + (f" (class {info.smallest} has {info.per_class})" if info.smallest else "")
                + "; lower bench.shots or bench.queries"
                + (", or add images to that class" if info.smallest else "")
            )


@dataclass
class BenchmarkData:
    """A benchmark's splits as loaded for one run."""

    spec: BenchmarkSpec
    dataset: Dataset
    test: ImageSet
    test_episodes: Episodes
    train: ImageSet | None = None
    val: ImageSet | None = None
    val_episodes: Episodes | None = None


@dataclass(frozen=True)
class Benchmark:
    """A benchmark as one run uses it, built once when the run is resolved: the protocol (``spec``), its
    dataset and the data root. It checks, describes and loads its input; nothing else looks a dataset up."""

    spec: BenchmarkSpec
    dataset: Dataset
    root: Path

    @classmethod
    def of(cls, spec: BenchmarkSpec, root: str = "") -> Benchmark:
        """``spec`` with its dataset, its data under ``root`` (""→ $HARNESS_DATA or the default cache). An
        image folder's benchmark without ``splits`` uses the folder's train / val / test splits."""
        path = data_root(root)
        if isinstance(spec.dataset, str):
            return cls(spec, get_dataset(spec.dataset), path)
        dataset = ImageFolder(spec.dataset, spec.image_size, path, spec.splits.get("train", "train"))
        if not spec.splits:
            spec = replace(spec, splits={role: role for role in ("train", "val", "test") if role in dataset.splits})
        return cls(spec, dataset, path)

    def check(self, bench: BenchConfig) -> None:
        """Reject protocol values the benchmark cannot honour, before any data is loaded."""
        self.spec.check(bench, self.dataset)

    def ensure_available(self, download: bool = False) -> None:
        """Raise the missing-dataset error (with the command that fixes it), or with ``download`` fetch
        the files; an image folder is decoded now (its unreadable images are named before any run starts)."""
        self.dataset.ensure_available(self.root, download)

    def provenance(self) -> dict:
        """For a record: a benchmark file's path and the SHA256 of its definition (settings, and an image
        folder's images), so that tables never mix two definitions under one name; {} for the harness's own."""
        if not self.spec.source:
            return {}
        definition = {k: v for k, v in asdict(self.spec).items() if k not in ("description", "source", "dataset")}
        blob = json.dumps({**definition, **self.dataset.definition()}, sort_keys=True, default=str)
        return {"benchmark_file": self.spec.source, "benchmark_sha256": hashlib.sha256(blob.encode()).hexdigest()}

    def data_provenance(self, with_train: bool) -> dict:
        """For a record: what the run's splits contain (content digests), and the files and decoders behind them."""
        roles = ("train", "val", "test") if with_train else ("test",)
        splits = [self.spec.splits[role] for role in roles if self.spec.splits.get(role) in self.dataset.splits]
        return self.dataset.provenance(self.root, splits)

    def training_classes(self, rotations: bool) -> int | None:
        """Classes of the training split (×4 with rotations as classes), or None where unknown."""
        classes = self.dataset.splits[self.spec.splits["train"]].classes
        return classes * (4 if rotations else 1) if classes else None

    def check_training_classes(self, run: RunConfig, key: str, ways: int) -> None:
        """``ways``-way training episodes (set by ``key``) need that many training classes (rotations count ×4).
        With ``data.holdout`` the held-out classes are known only once loaded; the sampler checks those."""
        available = self.training_classes(run.data.class_rotations)
        if available is not None and ways > available:
            raise ConfigError(
                f"{key}={ways}: {ways}-way training episodes need {ways} training classes, and "
                f"{run.benchmark} has {available}; use at most {available}"
            )

    def load(self, cfg: RunConfig, with_train: bool = True) -> BenchmarkData:
        """Load the test split and its episodes, and (``with_train``) the training and validation data
        shaped by ``data.*``: holdout group → validation, train_fraction subsample, class rotations."""
        spec, dataset, root = self.spec, self.dataset, self.root
        size, bench = cfg.data.image_size, cfg.bench

        test = dataset.load(root, spec.splits["test"], size)
        if spec.test_rotations:
            test = rotate_classes(test)
        episodes = dataset.fixed_episodes(spec.splits["test"], test) if spec.official_episodes else None
        if episodes is None:
            episodes = sample_episodes(
                test.labels.numpy(),
                bench.ways,
                bench.shots,
                bench.queries,
                bench.episodes,
                bench.episode_seed,
                test.identity,
            )
        data = BenchmarkData(spec, dataset, test, episodes)
        if not with_train:
            return data

        train = dataset.load(root, spec.splits["train"], size)
        if cfg.data.holdout:
            train, data.val = split_off_group(train, cfg.data.holdout, dataset)
        elif spec.splits.get("val") in dataset.splits:
            data.val = dataset.load(root, spec.splits["val"], size)
        if cfg.data.train_fraction < 1.0:
            train = subsample(train, cfg.data.train_fraction)
        if cfg.data.class_rotations:
            train = rotate_classes(train)
        data.train = train
        if data.val is not None:
            if spec.test_rotations:
                data.val = rotate_classes(data.val)
            groups = data.val.class_groups if spec.val_within_group else None
            data.val_episodes = sample_episodes(
                data.val.labels.numpy(),
                bench.ways,
                bench.shots,
                bench.queries,
                cfg.train.val_episodes,
                bench.episode_seed + VAL_SEED_OFFSET,
                data.val.identity,
                class_groups=groups,
            )
        return data


def rotate_classes(imageset: ImageSet) -> ImageSet:
    """Add each class rotated by 90°, 180° and 270° as three new classes."""
    import torch

    c = imageset.num_classes
    images = torch.cat([torch.rot90(imageset.images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.cat([imageset.labels + k * c for k in range(4)])
    names = [f"{n}@{90 * k}" if k else n for k in range(4) for n in imageset.class_names]
    groups = None if imageset.class_groups is None else imageset.class_groups.repeat(4)
    return ImageSet(images, labels, names, groups, imageset.group_names, imageset.identity + "+rot")


def subsample(imageset: ImageSet, fraction: float) -> ImageSet:
    """Keep round(fraction · n) images (at least one) of every class, chosen by fixed random keys,
    so smaller fractions are subsets of larger ones and every run sees the same images."""
    import torch

    labels = imageset.labels.numpy()
    keys = np.random.Philox(key=FRACTION_KEY).random_raw(len(labels))
    order = np.lexsort((keys, labels))  # by class, then key
    counts = np.bincount(labels, minlength=imageset.num_classes)
    rank = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep_sorted = rank < np.maximum(1, np.round(fraction * counts[labels[order]]))
    keep = np.sort(order[keep_sorted])
    index = torch.as_tensor(keep)
    return ImageSet(
        imageset.images[index],
        imageset.labels[index],
        imageset.class_names,
        imageset.class_groups,
        imageset.group_names,
        f"{imageset.identity}~{fraction:g}",
    )


def split_off_group(imageset: ImageSet, group: str, dataset: Dataset) -> tuple[ImageSet, ImageSet]:
    """(rest, held-out group) with classes renumbered within each part."""
    if imageset.class_groups is None or not imageset.group_names:
        raise ConfigError(f"data.holdout needs class groups, and {dataset.name} has none; leave data.holdout empty")
    if group not in imageset.group_names:
        raise UnknownNameError(dataset.group_kind or "group", group, imageset.group_names, "(data.holdout)")
    held = imageset.class_groups == imageset.group_names.index(group)
    return _select_classes(imageset, ~held, "-" + group), _select_classes(imageset, held, "=" + group)


def _select_classes(imageset: ImageSet, class_mask, tag: str) -> ImageSet:
    import torch

    classes = torch.nonzero(class_mask).flatten()
    remap = torch.full((imageset.num_classes,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    keep = remap[imageset.labels] >= 0
    groups = imageset.class_groups[classes]
    used = torch.unique(groups)
    group_remap = torch.full((len(imageset.group_names),), -1, dtype=torch.long)
    group_remap[used] = torch.arange(len(used))
    return ImageSet(
        imageset.images[keep],
        remap[imageset.labels[keep]],
        [imageset.class_names[i] for i in classes.tolist()],
        group_remap[groups],
        [imageset.group_names[i] for i in used.tolist()],
        imageset.identity + tag,
    )
