"""CIFAR-100 few-shot splits, 32 px RGB: CIFAR-FS (Bertinetto et al. 2019; 64/16/20 classes)
and FC100 (Oreshkin et al. 2018; 60/20/20 classes from disjoint superclasses)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo
from harness.data.integrity import RawFileError, open_zip
from harness.data.remote import RemoteFile
from harness.data.safe_pickle import load_pickle

_ZENODO = "https://zenodo.org/record/7978538/files"
CIFAR_MEAN, CIFAR_STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


class CIFAR100Subset(Dataset):
    """What CIFAR-FS and FC100 share: 32 px RGB CIFAR-100 images and their statistics."""

    channels = 3
    native_size = 32
    mean, std = CIFAR_MEAN, CIFAR_STD


class CIFARFS(CIFAR100Subset):
    """Reads ``cifar100.zip`` (``cifar100/data/<class>/*.png`` + ``cifar100/splits/bertinetto/*.txt``)."""

    name = "cifarfs"
    description = "CIFAR-FS (Bertinetto et al. 2019), 64/16/20 CIFAR-100 classes × 600, 32 px RGB"
    folder = "cifarfs"
    files = (RemoteFile("cifar100.zip", f"{_ZENODO}/cifar100.zip"),)
    splits = {"train": SplitInfo(64, 600), "val": SplitInfo(16, 600), "test": SplitInfo(20, 600)}
    prepare_hint = (
        "A local copy is a folder holding cifar100.zip, or its extracted cifar100/data and cifar100/splits/bertinetto."
    )

    def read_split(self, raw: Path, split: str) -> RawSplit:
        path = raw / "cifar100.zip"
        with open_zip(path) as archive:
            names = archive.namelist()
            lists = [n for n in names if n.endswith("splits/bertinetto/train.txt")]
            if not lists:
                raise RawFileError(
                    path,
                    "holds no splits/bertinetto/train.txt (want cifar100/data/<class>/*.png and cifar100/splits/bertinetto/*.txt)",
                )
            root = lists[0].rsplit("splits/", 1)[0]
            classes = _split_classes(archive.read(f"{root}splits/bertinetto/{split}.txt").decode())
            return _class_folders(classes, names, f"{root}data/", archive.read)

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        lists = sorted(source.rglob(f"splits/bertinetto/{split}.txt"))
        if not lists:
            return None
        root = lists[0].parent.parent.parent
        classes = _split_classes(lists[0].read_text(encoding="utf-8"))
        names = [p.relative_to(root).as_posix() for p in (root / "data").rglob("*.png")]
        return _class_folders(classes, names, "data/", lambda n: (root / n).read_bytes())


def _split_classes(text: str) -> list[str]:
    return sorted(line.strip() for line in text.splitlines() if line.strip())


def _class_folders(classes: list[str], names: list[str], data_prefix: str, read) -> RawSplit:
    from PIL import Image

    images, labels = [], []
    for c, cls in enumerate(classes):
        members = sorted(n for n in names if n.startswith(f"{data_prefix}{cls}/") and n.endswith(".png"))
        if not members:
            raise ValueError(f"class {cls} has no images under {data_prefix}{cls}/")
        images += [Image.open(io.BytesIO(read(n))) for n in members]
        labels += [c] * len(members)
    return RawSplit(images, np.array(labels), classes)


class FC100(CIFAR100Subset):
    """Reads ``fc100.zip`` holding ``FC100_{train,val,test}.pickle`` (``data`` N×32×32×3, ``labels``)."""

    name = "fc100"
    description = "FC100 (Oreshkin et al. 2018), 60/20/20 CIFAR-100 classes by superclass, 32 px RGB"
    folder = "fc100"
    files = (RemoteFile("fc100.zip", f"{_ZENODO}/fc100.zip"),)
    splits = {"train": SplitInfo(60, 600), "val": SplitInfo(20, 600), "test": SplitInfo(20, 600)}
    prepare_hint = "A local copy is a folder holding fc100.zip or the files FC100_train.pickle, FC100_val.pickle, FC100_test.pickle."

    def read_split(self, raw: Path, split: str) -> RawSplit:
        path = raw / "fc100.zip"
        with open_zip(path) as archive:
            members = [n for n in archive.namelist() if n.endswith(f"FC100_{split}.pickle")]
            if not members:
                raise RawFileError(path, f"holds no FC100_{split}.pickle")
            blob = archive.read(members[0])
        return _fc100_split(blob, f"{path}:{members[0]}")

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        found = sorted(source.rglob(f"FC100_{split}.pickle"))
        return _fc100_split(found[0].read_bytes(), str(found[0])) if found else None


def _fc100_split(blob: bytes, label: str) -> RawSplit:
    archive = load_pickle(blob, label, encoding="latin1")
    data, fine = np.asarray(archive["data"], dtype=np.uint8), np.asarray(archive["labels"], dtype=np.int64)
    order = np.argsort(fine, kind="stable")
    classes = np.unique(fine)
    return RawSplit(list(data[order]), np.searchsorted(classes, fine[order]), [f"cifar100-{c}" for c in classes])
