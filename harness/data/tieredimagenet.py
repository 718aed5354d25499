"""tieredImageNet (Ren et al. 2018): 351/97/160 classes from 20/6/8 ImageNet categories, 84 px.
Reads the published pickles: ``<split>_images_png.pkl`` (PNG-encoded images) and
``<split>_labels.pkl`` (``label_specific`` class ids, ``label_general`` category ids, names)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo
from harness.data.remote import RemoteFile
from harness.data.safe_pickle import load_pickle

_ZENODO = "https://zenodo.org/record/7978538/files"
SHORT = {"train": "train", "val": "val", "test": "test"}


class TieredImageNet(Dataset):
    name = "tieredimagenet"
    description = "tieredImageNet (Ren et al. 2018), 351/97/160 classes in disjoint categories, 84 px RGB"
    folder = "tieredimagenet"
    files = tuple(
        RemoteFile(f"{split}_{kind}.pkl", f"{_ZENODO}/tiered-imagenet-{split}_{kind}.pkl")
        for split in SHORT.values()
        for kind in ("images_png", "labels")
    )
    splits = {"train": SplitInfo(351, None), "val": SplitInfo(97, None), "test": SplitInfo(160, None)}
    channels = 3
    native_size = 84
    mean, std = (0.478, 0.456, 0.410), (0.279, 0.274, 0.287)
    group_kind = "category"
    prepare_hint = "A local copy is a folder holding {train,val,test}_images_png.pkl and {train,val,test}_labels.pkl."

    def read_split(self, raw: Path, split: str) -> RawSplit:
        from PIL import Image

        encoded = load_pickle(raw / f"{SHORT[split]}_images_png.pkl")
        meta = load_pickle(raw / f"{SHORT[split]}_labels.pkl", encoding="latin1")
        specific = np.asarray(meta["label_specific"], dtype=np.int64)
        general = np.asarray(meta["label_general"], dtype=np.int64)
        if len(specific) != len(encoded):
            raise ValueError(f"{split}: {len(encoded)} images but {len(specific)} labels")
        order = np.argsort(specific, kind="stable")
        classes = np.unique(specific)
        remap = {c: i for i, c in enumerate(classes)}
        names = meta.get("label_specific_str")
        class_names = [str(names[c]) if names is not None else f"class{c}" for c in classes]
        groups_of_class = np.array([general[specific == c][0] for c in classes])
        group_ids = np.unique(groups_of_class)
        group_names_src = meta.get("label_general_str")
        group_names = [str(group_names_src[g]) if group_names_src is not None else f"category{g}" for g in group_ids]
        images = [Image.open(io.BytesIO(bytes(encoded[i]))) for i in order]
        return RawSplit(
            images,
            np.array([remap[c] for c in specific[order]]),
            class_names,
            np.searchsorted(group_ids, groups_of_class),
            group_names,
        )
