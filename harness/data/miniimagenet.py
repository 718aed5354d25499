"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) split: 64/16/20 classes ×
600 images, 84 px.

Two sources: learn2learn's pickles (``mini-imagenet-cache-<split>.pkl``: ``image_data`` N×84×84×3 uint8
and ``class_dict`` name → indices), linked as raw files; or the 60,000 JPEGs themselves, found **by
file name** anywhere under ``--from DIR`` (Ravi's flat ``images/`` folder, per-class folders, any other
tree), with the split taken from the harness's own copy of Ravi's split (``splits/miniimagenet-ravi.txt``),
so a user needs only the images. A missing, extra or duplicated file is one error naming it. Each split is
decoded once (with a progress bar) into its checksummed cache; the manifest records a digest of the
decoded images per split, one SHA256 over the JPEG files, and the decoders' versions (content.py).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo
from harness.data.content import folder_digest
from harness.data.integrity import RawFileError
from harness.data.remote import RemoteFile
from harness.data.safe_pickle import load_pickle
from harness.errors import DataError

_ZENODO = "https://zenodo.org/record/7978538/files"
PICKLE_SPLITS = {"train": "train", "val": "validation", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_from_class_dict(images: np.ndarray, class_dict: dict) -> RawSplit:
    """learn2learn's cache layout → a RawSplit with classes in name order."""
    names = sorted(class_dict)
    order = np.concatenate([np.asarray(class_dict[n], dtype=np.int64) for n in names])
    labels = np.concatenate([np.full(len(class_dict[n]), c) for c, n in enumerate(names)])
    return RawSplit(list(np.asarray(images)[order]), labels, names)


@lru_cache(maxsize=None)
def ravi_split() -> dict[str, dict[str, tuple[str, ...]]]:
    """Split → class (WordNet id) → its image file names, in Ravi & Larochelle's order."""
    split: dict[str, dict[str, tuple[str, ...]]] = {}
    text = (resources.files("harness.data") / "splits" / "miniimagenet-ravi.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            role, wnid, *numbers = line.split()
            split.setdefault(role, {})[wnid] = tuple(f"{wnid}{int(n):08d}.jpg" for n in numbers)
    return split


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names):,} in all)" if len(names) > shown else "")


def find_images(source: Path, split: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, Path]:
    """File name → its path under ``source`` for every image of ``split``; one DataError naming the images
    that are missing, that occur twice, or that are not part of the split."""
    wanted = {name for classes in split.values() for files in classes.values() for name in files}
    found: dict[str, Path] = {}
    twice, extra = [], []
    for path in sorted(source.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.name not in wanted:
            extra.append(str(path.relative_to(source)))
        elif path.name in found:
            twice.append(f"{path.name} ({found[path.name].relative_to(source)} and {path.relative_to(source)})")
        else:
            found[path.name] = path
    missing = sorted(wanted - set(found))
    problems = [
        f"{len(missing):,} images of the split are missing: {_listed(missing)}" if missing else "",
        f"{len(twice):,} images occur twice: {_listed(twice, 2)}" if twice else "",
        f"{len(extra):,} image files are not part of the split: {_listed(extra)}" if extra else "",
    ]
    if any(problems):
        raise DataError(
            f"--from {source}: not the images of miniImageNet's Ravi & Larochelle split "
            f"({'; '.join(p for p in problems if p)}). The folder must hold exactly its 60,000 images, in any "
            "layout (a flat images/ folder or one folder per class); nothing was prepared."
        )
    return found


def decode_images(paths: list[Path], label: str) -> list[np.ndarray]:
    """Each file decoded to uint8 RGB, with a progress bar; an unreadable file is one error naming it."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    images = []
    for path in tqdm(paths, desc=label, unit="image", mininterval=1.0):
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise RawFileError(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from None
    return images


class MiniImageNet(Dataset):
    name = "miniimagenet"
    description = "miniImageNet, Ravi-Larochelle split (64/16/20 classes × 600), 84 px RGB"
    folder = "miniimagenet"
    files = tuple(
        RemoteFile(f"mini-imagenet-cache-{mode}.pkl", f"{_ZENODO}/mini-imagenet-cache-{mode}.pkl")
        for mode in PICKLE_SPLITS.values()
    )
    splits = {"train": SplitInfo(64, 600), "val": SplitInfo(16, 600), "test": SplitInfo(20, 600)}
    channels = 3
    native_size = 84
    mean, std = (0.472, 0.453, 0.410), (0.277, 0.268, 0.285)
    prepare_hint = (
        "A local copy is a folder holding the 60,000 images of the Ravi & Larochelle split (<wnid><number>.jpg, "
        "in any layout: a flat images/ folder, or one folder per class), or learn2learn's "
        "mini-imagenet-cache-{train,validation,test}.pkl."
    )

    def __init__(self):
        self._found: dict[Path, dict[str, Path]] = {}

    def read_split(self, raw: Path, split: str) -> RawSplit:
        cache = load_pickle(raw / f"mini-imagenet-cache-{PICKLE_SPLITS[split]}.pkl")
        return split_from_class_dict(cache["image_data"], cache["class_dict"])

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        """``split``'s images found by file name under ``source`` (None: it holds no image files)."""
        if not any(path.suffix.lower() in IMAGE_SUFFIXES for path in source.rglob("*")):
            return None
        if source not in self._found:
            self._found[source] = find_images(source, ravi_split())
        classes = ravi_split()[split]
        names = sorted(classes)
        paths = [self._found[source][file] for wnid in names for file in classes[wnid]]
        labels = np.repeat(np.arange(len(names)), [len(classes[wnid]) for wnid in names])
        images = decode_images(paths, f"decoding miniImageNet {split}")
        digest = folder_digest({path.name: path for path in paths})
        return RawSplit(images, labels, names, source={f"{split} images ({len(paths):,} files)": digest})
