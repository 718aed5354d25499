"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015), from the files of the public
``brendenlake/omniglot`` repository.

Images are stored as ink intensity (background 0, ink 255): Lake's PNGs are 1-bit with black ink.
Classes are ``Alphabet/characterNN``; a class's group is its alphabet.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, RemoteFile, SplitInfo
from harness.data.integrity import open_zip

_BASE = "https://github.com/brendenlake/omniglot/raw/master/python"
# SHA256 of the published files (the same values as TensorFlow Datasets' url_checksums/omniglot.txt
# and ../shared/data/omniglot/SHA256SUMS).
BACKGROUND, EVALUATION, SMALL1, SMALL2, ALL_RUNS = (
    RemoteFile(name, f"{_BASE}/{folder}{name}", sha256=sha256)
    for folder, name, sha256 in (
        ("", "images_background.zip", "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640"),
        ("", "images_evaluation.zip", "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee"),
        ("", "images_background_small1.zip", "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
        ("", "images_background_small2.zip", "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
        (
            "one-shot-classification/",
            "all_runs.zip",
            "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
        ),
    )
)
RUNS = 20
RUN_WAYS = 20


def decode_ink(data: bytes) -> np.ndarray:
    """A Lake PNG → uint8 ink image (255 where the pen drew, 0 elsewhere)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    return 255 - np.asarray(image, dtype=np.uint8)


def read_alphabets(zip_path: Path, exclude: tuple[str, ...] = ()) -> RawSplit:
    """All ``<top>/<Alphabet>/<character>/<file>.png`` images of a Lake zip, in sorted order."""
    images, labels, class_names, class_groups, group_names = [], [], [], [], []
    with open_zip(zip_path) as archive:
        pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
        for name in pngs:
            parts = name.split("/")
            if len(parts) < 4:
                raise ValueError(
                    f"{zip_path.name}: unexpected entry {name} (want <top>/<Alphabet>/<character>/<file>.png)"
                )
            alphabet, character = parts[-3], parts[-2]
            if alphabet in exclude:
                continue
            cls = f"{alphabet}/{character}"
            if not class_names or class_names[-1] != cls:
                if not group_names or group_names[-1] != alphabet:
                    group_names.append(alphabet)
                class_names.append(cls)
                class_groups.append(len(group_names) - 1)
            images.append(decode_ink(archive.read(name)))
            labels.append(len(class_names) - 1)
    if not images:
        raise ValueError(f"{zip_path.name} holds no PNG images")
    return RawSplit(images, np.array(labels), class_names, np.array(class_groups), group_names)


def read_runs(zip_path: Path) -> RawSplit:
    """Lake's 20 one-shot runs. Run r occupies images [40r, 40r+40): its 20 training images
    (class01..class20, sorted), then its 20 test items (item01..item20); the class of a test item
    is read from ``runNN/class_labels.txt``. Labels are ``20·r + class index``; groups are runs."""
    images, labels, class_names = [], [], []
    with open_zip(zip_path) as archive:
        for run in range(1, RUNS + 1):
            prefix = f"run{run:02d}"
            pairs = [
                line.split()
                for line in archive.read(f"{prefix}/class_labels.txt").decode().splitlines()
                if line.strip()
            ]
            answer = {Path(test).name: Path(train).name for test, train in pairs}
            training = sorted(answer.values())
            tests = sorted(answer)
            if len(training) != RUN_WAYS or len(tests) != RUN_WAYS:
                raise ValueError(f"{prefix}/class_labels.txt must pair {RUN_WAYS} test items with {RUN_WAYS} classes")
            offset = (run - 1) * RUN_WAYS
            for c, name in enumerate(training):
                images.append(decode_ink(archive.read(f"{prefix}/training/{name}")))
                labels.append(offset + c)
                class_names.append(f"{prefix}/{Path(name).stem}")
            for name in tests:
                images.append(decode_ink(archive.read(f"{prefix}/test/{name}")))
                labels.append(offset + training.index(answer[name]))
    groups = np.repeat(np.arange(RUNS), RUN_WAYS)
    return RawSplit(images, np.array(labels), class_names, groups, [f"run{r:02d}" for r in range(1, RUNS + 1)])


def lake_run_episodes(labels, identity: str):
    """The official episodes: one per run, 20-way 1-shot, its 20 test items as queries."""
    from harness.episodes import Episodes

    labels = np.asarray(labels)
    per_run = 2 * RUN_WAYS
    starts = np.arange(RUNS)[:, None] * per_run
    support = starts + np.arange(RUN_WAYS)[None, :]
    query = starts + RUN_WAYS + np.arange(RUN_WAYS)[None, :]
    offsets = np.arange(RUNS)[:, None] * RUN_WAYS
    return Episodes.build(
        support=support,
        support_labels=labels[support] - offsets,
        query=query,
        query_labels=labels[query] - offsets,
        ways=RUN_WAYS,
        shots=1,
        identity=identity,
    )


class Omniglot(Dataset):
    """Standard background (964 characters, 30 alphabets) / evaluation (659, 20 alphabets) split."""

    name = "omniglot"
    description = "Omniglot background/evaluation split (Lake et al. 2015), 105 px ink images"
    folder = "omniglot"
    files = (BACKGROUND, EVALUATION)
    splits = {"train": SplitInfo(964, 20), "test": SplitInfo(659, 20)}
    native_size = 105
    mean, std = (0.08,), (0.27,)
    group_kind = "alphabet"
    prepare_hint = "A local copy is a folder holding Lake's images_background.zip and images_evaluation.zip."

    def read_split(self, raw: Path, split: str) -> RawSplit:
        return read_alphabets(raw / (BACKGROUND if split == "train" else EVALUATION).name)


class OmniglotLake(Dataset):
    """Lake's minimal background sets (5 alphabets) with the 20 official one-shot runs as test."""

    folder = "omniglot"
    native_size = 105
    mean, std = (0.08,), (0.27,)
    group_kind = "alphabet"
    background: RemoteFile = SMALL1

    def read_split(self, raw: Path, split: str) -> RawSplit:
        if split == "test":
            return read_runs(raw / ALL_RUNS.name)
        return read_alphabets(raw / self.background.name)

    def fixed_episodes(self, split: str, imageset):
        return lake_run_episodes(imageset.labels, imageset.identity) if split == "test" else None


class OmniglotSmall1(OmniglotLake):
    name = "omniglot-small1"
    description = "Lake's minimal background set 1 (Balinese, Early Aramaic, Greek, Korean, Latin) + 20 official runs"
    files = (SMALL1, ALL_RUNS)
    splits = {"train": SplitInfo(136, 20), "test": SplitInfo(400, 2)}
    background = SMALL1
    prepare_hint = "A local copy is a folder holding images_background_small1.zip and all_runs.zip."


class OmniglotSmall2(OmniglotLake):
    name = "omniglot-small2"
    description = "Lake's minimal background set 2 (5 other alphabets) + 20 official runs"
    files = (SMALL2, ALL_RUNS)
    splits = {"train": SplitInfo(None, 20), "test": SplitInfo(400, 2)}
    background = SMALL2
    prepare_hint = "A local copy is a folder holding images_background_small2.zip and all_runs.zip."
