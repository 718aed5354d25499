"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015), from the files of the public
``brendenlake/omniglot`` repository.

Images are stored as ink intensity (background 0, ink 255): Lake's PNGs are 1-bit with black ink.
Classes are ``Alphabet/characterNN``; a class's group is its alphabet.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo
from harness.data.content import class_digests, first_difference, folder_digest, split_digest
from harness.data.integrity import file_digest, open_zip
from harness.data.remote import RemoteFile
from harness.errors import DataError

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


def read_alphabets(container: Path, exclude: tuple[str, ...] = ()) -> RawSplit:
    """All ``<Alphabet>/<character>/<file>.png`` images of one of Lake's containers, a zip
    (``<top>/<Alphabet>/<character>/<file>.png`` inside) or the folder it unpacks to, in sorted order."""
    images, labels, class_names, class_groups, group_names = [], [], [], [], []
    with _members(container) as (names, read):
        for name in sorted(n for n in names if n.endswith(".png")):
            parts = name.split("/")
            if len(parts) < 4:
                raise ValueError(
                    f"{container.name}: unexpected entry {name} (want <top>/<Alphabet>/<character>/<file>.png)"
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
            images.append(decode_ink(read(name)))
            labels.append(len(class_names) - 1)
    if not images:
        raise ValueError(f"{container.name} holds no PNG images")
    return RawSplit(images, np.array(labels), class_names, np.array(class_groups), group_names)


@contextmanager
def _members(container: Path):
    """(member names, a reader of one member's bytes) of a zip, or of a folder with its name as the top."""
    if container.is_dir():
        top = container.parent
        names = [path.relative_to(top).as_posix() for path in container.rglob("*.png")]
        yield names, lambda name: (top / name).read_bytes()
        return
    with open_zip(container) as archive:
        yield archive.namelist(), archive.read


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


SPLIT_FILES = resources.files("harness.data") / "splits"


@lru_cache(maxsize=None)
def published_characters() -> dict[str, dict[str, str]]:
    """Container (``images_background.zip``, ``images_evaluation.zip``) → character → the SHA256 of its 20
    decoded drawings (:func:`harness.data.content.class_digests` at 105 px), from Lake's published images."""
    pins: dict[str, dict[str, str]] = {}
    for line in (SPLIT_FILES / "omniglot-characters.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            container, character, digest = line.split()
            pins.setdefault(container, {})[character] = digest
    return pins


@lru_cache(maxsize=None)
def vinyals_split() -> dict[str, tuple[str, ...]]:
    """Split → its characters (``Alphabet/characterNN``) in Vinyals et al.'s (2016) split as Snell et al.
    (2017) published it; each character's four rotations are classes of the same split."""
    split: dict[str, list[str]] = {}
    for line in (SPLIT_FILES / "omniglot-vinyals.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            role, character = line.split()
            split.setdefault(role, []).append(character)
    return {role: tuple(characters) for role, characters in split.items()}


def decoded_characters(raw: RawSplit) -> dict[str, str]:
    """Character → the SHA256 of its drawings as decoded (what :func:`published_characters` pins)."""
    return class_digests([np.asarray(image, dtype=np.uint8)[None] for image in raw.images], raw.labels, raw.class_names)


class Omniglot(Dataset):
    """Standard background (964 characters, 30 alphabets) / evaluation (659, 20 alphabets) split.

    A copy is checked by content: Lake's published zips by their SHA256, any other container of the same
    images (re-packed zips, the unpacked folders ``images_background/``, ``images_evaluation/``) by the
    SHA256 of each character's decoded drawings against those of Lake's images."""

    name = "omniglot"
    description = "Omniglot background/evaluation split (Lake et al. 2015), 105 px ink images"
    folder = "omniglot"
    files = (BACKGROUND, EVALUATION)
    splits = {"train": SplitInfo(964, 20), "test": SplitInfo(659, 20)}
    native_size = 105
    mean, std = (0.08,), (0.27,)
    group_kind = "alphabet"
    prepare_hint = (
        "A local copy is a folder holding images_background.zip and images_evaluation.zip (Lake's, or any zips "
        "or unpacked folders images_background/ and images_evaluation/ of the same images)."
    )

    def read_split(self, raw: Path, split: str) -> RawSplit:
        return self.split_of({remote.name: raw / remote.name for remote in self.files}, split)

    def split_of(self, containers: dict[str, Path], split: str) -> RawSplit:
        """``split`` from the two containers (file name → a zip or folder holding its images)."""
        return read_alphabets(containers[(BACKGROUND if split == "train" else EVALUATION).name])

    def verify_content(self, name: str, path: Path) -> dict:
        """Accept a container of ``name`` whose decoded drawings equal Lake's, character by character; else
        one error naming the first character that differs."""
        try:
            found = decoded_characters(read_alphabets(path))
        except ValueError as exc:
            raise DataError(f"{path}: not a copy of Lake's {name} ({exc}). {self.prepare_hint}") from None
        problem = first_difference(found, published_characters()[name])
        if problem:
            raise DataError(
                f"{path}: not the published {name}: {problem} (checked by the SHA256 of each character's decoded "
                f"drawings). Nothing was prepared; prepare from an unmodified copy of Lake's images."
            )
        return {"verified": "content", "content_sha256": split_digest(found)}

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        """The unpacked folders (or zips under other names' folders) found under ``source``, checked by content."""
        containers = {}
        for remote in self.files:
            folders = sorted(p for p in source.rglob(remote.name.removesuffix(".zip")) if p.is_dir())
            zips = sorted(source.rglob(remote.name))
            if not (zips or folders):
                return None
            containers[remote.name] = zips[0] if zips else folders[0]
        for name, path in containers.items():
            self.verify_content(name, path)
        raw = self.split_of(containers, split)
        for path in containers.values():
            if path.is_dir():
                pngs = {p.relative_to(path).as_posix(): p for p in path.rglob("*.png")}
                raw.source[f"{path.name}/ ({len(pngs)} files)"] = folder_digest(pngs)
            else:
                raw.source[path.name] = file_digest(path)
        return raw


class OmniglotVinyals(Omniglot):
    """Vinyals et al.'s (2016) character split of all 1,623 characters (1,028 / 172 / 423), from Lake's
    background and evaluation images; with the benchmark's rotations every character is four classes."""

    name = "omniglot-vinyals"
    description = "Omniglot, Vinyals et al.'s character split (1,028 / 172 / 423), 105 px ink images"
    splits = {"train": SplitInfo(1028, 20), "val": SplitInfo(172, 20), "test": SplitInfo(423, 20)}

    def split_of(self, containers: dict[str, Path], split: str) -> RawSplit:
        wanted = vinyals_split()[split]
        drawings: dict[str, list] = {}
        for part in (read_alphabets(containers[remote.name]) for remote in self.files):
            for image, label in zip(part.images, part.labels):
                drawings.setdefault(part.class_names[label], []).append(image)
        missing = [name for name in wanted if name not in drawings]
        if missing:
            raise ValueError(f"characters of the Vinyals {split} split are missing: {', '.join(missing[:3])}")
        alphabets = list(dict.fromkeys(name.split("/")[0] for name in wanted))
        images = [image for name in wanted for image in drawings[name]]
        labels = [label for label, name in enumerate(wanted) for _ in drawings[name]]
        groups = [alphabets.index(name.split("/")[0]) for name in wanted]
        group_names = alphabets
        return RawSplit(images, np.array(labels), list(wanted), np.array(groups), group_names)


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
