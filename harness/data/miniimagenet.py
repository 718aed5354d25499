"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) split: 64/16/20 classes ×
600 images, 84 px. Reads learn2learn's pickles (``mini-imagenet-cache-<split>.pkl``: ``image_data``
N×84×84×3 uint8 and ``class_dict`` name → indices) or an image folder with the split CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, RemoteFile, SplitInfo
from harness.data.safe_pickle import load_pickle

_ZENODO = "https://zenodo.org/record/7978538/files"
PICKLE_SPLITS = {"train": "train", "val": "validation", "test": "test"}
CSV_SPLITS = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}


def split_from_class_dict(images: np.ndarray, class_dict: dict) -> RawSplit:
    """learn2learn's cache layout → a RawSplit with classes in name order."""
    names = sorted(class_dict)
    order = np.concatenate([np.asarray(class_dict[n], dtype=np.int64) for n in names])
    labels = np.concatenate([np.full(len(class_dict[n]), c) for c, n in enumerate(names)])
    return RawSplit(list(np.asarray(images)[order]), labels, names)


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
        "A local copy is a folder holding learn2learn's mini-imagenet-cache-{train,validation,test}.pkl, "
        "or an image folder images/*.jpg with Ravi & Larochelle's train.csv, val.csv, test.csv (filename,label)."
    )

    def read_split(self, raw: Path, split: str) -> RawSplit:
        cache = load_pickle(raw / f"mini-imagenet-cache-{PICKLE_SPLITS[split]}.pkl")
        return split_from_class_dict(cache["image_data"], cache["class_dict"])

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        csvs = sorted(source.rglob(CSV_SPLITS[split]))
        if not csvs:
            return None
        from PIL import Image

        table = csvs[0]
        with open(table, newline="") as fh:
            rows = [(r["filename"], r["label"]) for r in csv.DictReader(fh)]
        images_dir = table.parent / "images"
        names = sorted({label for _, label in rows})
        index = {n: c for c, n in enumerate(names)}
        rows.sort(key=lambda r: (index[r[1]], r[0]))
        images = [Image.open(images_dir / filename).convert("RGB") for filename, _ in rows]
        return RawSplit(images, np.array([index[label] for _, label in rows]), names)
