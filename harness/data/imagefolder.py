"""Image-folder datasets: your own images, declared in a benchmark file rather than in code.

A folder of class subfolders of images (any format PIL reads, grey or colour), split into train /
val / test by subfolders (``train/<class>/*``) or by a split file: a JSON ``{"train": [classes],
"val": [...], "test": [...]}`` or one CSV per split with ``filename,label`` rows (Ravi & Larochelle's
format; ``filename`` lies in ``<folder>/<label>/`` or in ``<folder>/``). Every split is decoded once,
at the benchmark's image size (other sizes from the originals), into the same checksummed uint8
caches as the built-in datasets, under ``<data root>/imagefolder/<listing digest>/``: adding, removing
or changing an image gives a new listing digest and so a fresh decode. ``facts.json`` there holds the
channels, the training split's mean and std and the SHA256 of every image (a benchmark hash covers it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from harness.data.base import Dataset, RawSplit, SplitInfo, _imageset_state, _to_imageset
from harness.data.integrity import save_cache
from harness.errors import ConfigError, DataError
from harness.files import write_text

DECLARATION_KEYS = ("image_folder", "split", "channels", "mean", "std")
SPLIT_FOLDERS = ("train", "val", "test")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
LAYOUT = (
    'class subfolders under train/ val/ test/, or `split:` naming a JSON file {"train": [classes], '
    '"test": [...]} or one CSV per split ({train: train.csv, test: test.csv}, rows filename,label)'
)


def _listed(items: list, shown: int = 5) -> str:
    return ", ".join(map(str, items[:shown])) + (f", ... ({len(items)} in all)" if len(items) > shown else "")


@dataclass(frozen=True)
class ImageFolderSpec:
    """An image-folder declaration from a benchmark file's ``dataset:`` (paths made absolute)."""

    folder: str
    split: str | tuple[tuple[str, str], ...] = ""  # "": train/ val/ test/ subfolders; a JSON file; (split, CSV) pairs
    channels: int = 0  # 0: inferred (1 when every image is grey, else 3)
    mean: tuple[float, ...] = ()  # (): computed from the training split
    std: tuple[float, ...] = ()

    def __str__(self) -> str:
        return f"image folder {self.folder}"

    @classmethod
    def parse(cls, tree: dict, base: Path, context: str) -> ImageFolderSpec:
        """Check a ``dataset: {image_folder: ..., ...}`` mapping; relative paths are relative to ``base``."""
        unknown = sorted(set(tree) - set(DECLARATION_KEYS))
        if unknown or "image_folder" not in tree:
            problem = f"unknown key(s) {', '.join(map(str, unknown))}" if unknown else "no image_folder"
            raise ConfigError(
                f"{context}: {problem}; an image-folder dataset takes the keys "
                f"{', '.join(DECLARATION_KEYS)} (image_folder required)"
            )
        path = lambda value: str((base / str(value)).expanduser().resolve())  # noqa: E731
        split = tree.get("split") or ""
        if isinstance(split, dict):
            split = tuple((str(name), path(file)) for name, file in split.items())
        elif isinstance(split, str) and split.endswith(".json"):
            split = path(split)
        elif split:
            raise ConfigError(f"{context}: split must be a .json file or a mapping of split → .csv file, got {split!r}")
        channels = tree.get("channels", 0)
        if channels not in (0, 1, 3) or isinstance(channels, bool):
            raise ConfigError(f"{context}: channels must be 1 (grey) or 3 (colour), got {channels!r}; omit it to infer")
        mean, std = tree.get("mean", []), tree.get("std", [])
        numbers = lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and x >= 0 for x in v)  # noqa: E731
        if not (numbers(mean) and numbers(std) and len(mean) == len(std) in ({0, channels} if channels else {0, 1, 3})):
            raise ConfigError(
                f"{context}: mean and std are declared together, one number in 0..1 per channel, got "
                f"mean={mean!r}, std={std!r}; omit both to compute them from the training split"
            )
        return cls(
            path(tree["image_folder"]), split, channels or len(mean), tuple(map(float, mean)), tuple(map(float, std))
        )


def _image_names() -> set[str]:
    from PIL import Image

    return {suffix.lower() for suffix in Image.registered_extensions()}


def confined(root: Path, relative: str, source: Path) -> None:
    """A split file's class or file name must name something inside the image folder."""
    if Path(relative).is_absolute() or not (root / relative).resolve().is_relative_to(root.resolve()):
        raise ConfigError(
            f"{source}: {relative[:200]!r} lies outside the image folder {root}; a split file names "
            "classes (and files) relative to it, with no absolute paths or '..'"
        )


def _images(folder: Path, suffixes: set[str]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
    )


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _json_split(path: Path, root: Path, suffixes: set[str]) -> dict[str, dict[str, list[Path]]]:
    try:
        lists = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"split file {path} cannot be read ({type(exc).__name__}: {exc}); {LAYOUT}") from None
    if not isinstance(lists, dict) or not all(isinstance(v, list) for v in lists.values()):
        raise DataError(
            f'split file {path} must hold {{"train": [class folder names], "test": [...]}}, got {str(lists)[:80]}'
        )
    for c in (c for classes in lists.values() for c in classes):
        confined(root, str(c), path)
    missing = sorted({str(c) for classes in lists.values() for c in classes if not (root / str(c)).is_dir()})
    if missing:
        raise DataError(
            f"split file {path} names {len(missing)} classes with no folder in {root}: {_listed(missing)}. "
            "Correct the class names in the split file, or add those class folders"
        )
    return {split: {str(c): _images(root / str(c), suffixes) for c in classes} for split, classes in lists.items()}


def _csv_split(path: Path, root: Path) -> dict[str, list[Path]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and row != ["filename", "label"]]
    except (OSError, ValueError) as exc:
        raise DataError(f"split file {path} cannot be read ({type(exc).__name__}: {exc}); {LAYOUT}") from None
    members: dict[str, list[Path]] = {}
    missing = []
    for row in rows:
        if len(row) != 2:
            raise DataError(f"split file {path}: rows are filename,label, got {','.join(row)!r}")
        filename, label = row
        confined(root, str(Path(label) / filename), path)
        found = next((p for p in (root / label / filename, root / filename) if p.is_file()), None)
        if found:
            members.setdefault(label, []).append(found)
        else:
            missing.append(filename)
    if missing:
        raise DataError(
            f"split file {path} names {len(missing)} images not found in {root} (as <label>/<filename> "
            f"or <filename>): {_listed(missing)}. Correct the split file, or add the images"
        )
    return {label: sorted(paths) for label, paths in sorted(members.items())}


def list_members(spec: ImageFolderSpec) -> dict[str, dict[str, list[Path]]]:
    """split → class → image files, from the declaration; a missing folder or class is a DataError."""
    root, suffixes = Path(spec.folder), _image_names()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; correct `image_folder:` in the benchmark file "
            "(relative paths are relative to the file)"
        )
    if isinstance(spec.split, tuple):
        return {split: _csv_split(Path(csv_path), root) for split, csv_path in spec.split}
    if spec.split:
        return _json_split(Path(spec.split), root, suffixes)
    splits = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if not splits:
        raise DataError(
            f"image folder {root} has no train/ val/ test/ subfolders and the benchmark file names no "
            f"split file; use {LAYOUT}"
        )
    return {s: {c.name: _images(c, suffixes) for c in _class_folders(root / s)} for s in splits}


def check_members(members: dict[str, dict[str, list[Path]]], root: str) -> None:
    """Every split has classes, every class has images, and no class is in two splits."""
    for split, classes in members.items():
        if not classes:
            raise DataError(
                f"split '{split}' of image folder {root} is empty: it has no classes. Add class "
                f"folders of images to it, or drop the split; {LAYOUT}"
            )
        empty = [name for name, paths in classes.items() if not paths]
        if empty:
            raise DataError(
                f"split '{split}' of image folder {root}: {len(empty)} class folders hold no images: "
                f"{_listed(empty)}. Add images (any format PIL reads) or remove those classes"
            )
    seen: dict[str, str] = {}
    for split, classes in members.items():
        for name in classes:
            if seen.setdefault(name, split) != split:
                raise DataError(
                    f"class '{name}' of image folder {root} is in both split '{seen[name]}' and split "
                    f"'{split}'; few-shot splits need disjoint classes"
                )


class ImageFolder(Dataset):
    """A user's image folder as a dataset (see the module docstring)."""

    description = "your own images (a benchmark file's image_folder)"

    def __init__(self, spec: ImageFolderSpec, image_size: int, root: Path, train_split: str = "train"):
        self.spec, self.native_size, self.root, self.train_split = spec, image_size, root, train_split
        self.members = list_members(spec)
        check_members(self.members, spec.folder)
        listing = [
            [s, c, str(p), (st := p.stat()).st_size, st.st_mtime_ns]
            for s, classes in self.members.items()
            for c, paths in classes.items()
            for p in paths
        ]
        digest = hashlib.sha256(json.dumps([spec.channels, image_size, listing]).encode()).hexdigest()
        self.name = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(spec.folder).name) or "images"
        self.folder = f"imagefolder/{digest[:16]}"
        self.facts_path, self.decode_size = root / self.folder / "facts.json", image_size
        self.splits = {}
        for split, classes in self.members.items():
            smallest = min(classes, key=lambda c: len(classes[c]))
            folder = classes[smallest][0].parent
            self.splits[split] = SplitInfo(
                len(classes), len(classes[smallest]), str(folder) if folder.name == smallest else smallest
            )
        self.prepare_hint = f"Your images are read from {spec.folder}."

    @property
    def channels(self) -> int:  # declared, else as decoded, else read from the image headers
        return self.spec.channels or self._stored_facts().get("channels") or self.inferred_channels

    @property
    def mean(self) -> tuple[float, ...]:
        return self.spec.mean or tuple(self.facts()["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return self.spec.std or tuple(self.facts()["std"])

    def _stored_facts(self) -> dict:
        try:
            return json.loads(self.facts_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @cached_property
    def inferred_channels(self) -> int:
        from PIL import Image

        for paths in (p for classes in self.members.values() for p in classes.values()):
            for path in paths:
                try:
                    with Image.open(path) as image:
                        if image.mode not in GREY_MODES:
                            return 3
                except Exception:  # an unreadable image is named when the split is decoded
                    continue
        return 1

    def ensure_available(self, root: Path, download: bool = False) -> None:
        """Decode every split now (once), so that unreadable images are reported before a run starts."""
        self.facts()

    def facts(self) -> dict:
        """channels, mean, std and the images' SHA256, decoding every split into the cache the first time."""
        stored = self._stored_facts()
        if stored:
            return stored
        digest, channels = hashlib.sha256(), self.channels
        count = sum(len(paths) for classes in self.members.values() for paths in classes.values())
        print(
            f"harness: decoding the {count} images of {self.spec.folder} into {self.root / self.folder} (once)",
            file=sys.stderr,
            flush=True,
        )
        for split in self.splits:
            raw, split_digest = self._decode(split, self.native_size)
            digest.update(f"{split}:{split_digest}\n".encode())
            imageset = _to_imageset(raw, self.native_size, channels, f"{self.name}/{split}")
            save_cache(_imageset_state(imageset), self.cache_path(self.root, split, self.native_size))
        mean, std = channel_stats(self.load(self.root, self.train_split).images)
        facts = {"channels": channels, "mean": mean, "std": std, "sha256": digest.hexdigest()}
        write_text(self.facts_path, json.dumps(facts, indent=1) + "\n")
        return facts

    def definition(self) -> dict:
        facts = self.facts()
        return {
            "dataset": self.name,
            "images_sha256": facts["sha256"],
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def load(self, root: Path, split: str, size: int = 0):
        """As :meth:`Dataset.load`; another size than the benchmark's is decoded from the original images."""
        self.decode_size = size or self.native_size
        return super().load(root, split, size)

    def read_split(self, raw: Path, split: str) -> RawSplit:
        return self._decode(split, self.decode_size)[0]

    def _decode(self, split: str, size: int) -> tuple[RawSplit, str]:
        """The split's images at ``size`` px, and the SHA256 over their names and bytes; unreadable
        images are one DataError naming them."""
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        images, labels, bad = [], [], []
        digest = hashlib.sha256()
        for label, (name, paths) in enumerate(self.members[split].items()):
            for path in paths:
                try:
                    data = path.read_bytes()
                    with Image.open(io.BytesIO(data)) as image:
                        images.append(np.asarray(eight_bit(image).convert(mode).resize((size, size), Image.BILINEAR)))
                except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                    bad.append(f"{path} ({type(exc).__name__}: {exc})")
                    continue
                labels.append(label)
                digest.update(f"{name}/{path.name}:{hashlib.sha256(data).hexdigest()}\n".encode())
        if bad:
            total = sum(map(len, self.members[split].values()))
            raise DataError(
                f"{len(bad)} of {total} images in split '{split}' of image folder {self.spec.folder} "
                f"cannot be read: {_listed(bad, 3)}. Replace or delete them (and drop them from a split file)"
            )
        if images and all(int(a.max()) == int(a.min()) for a in images):
            paths = [str(p) for classes in self.members[split].values() for p in classes]
            raise DataError(
                f"every image of split '{split}' of image folder {self.spec.folder} decodes to a single "
                f"value (e.g. {_listed(paths, 3)}): no signal to learn or score; check how they were "
                "saved (their mode and content)"
            )
        return RawSplit(images, np.array(labels), list(self.members[split])), digest.hexdigest()


def eight_bit(image):
    """``image`` as PIL mode L or RGB(A-free) with its full range kept: 16-bit and 32-bit grey scaled to 0..255
    (PIL's own conversion clips them), float grey read as 0..1 (or 0..255), and transparency composited over
    white (content drawn in the alpha channel stays visible)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image


def channel_stats(images) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (of pixel values in 0..1) of uint8 N×C×H×W images, exactly, from histograms."""
    values = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = np.zeros(256, dtype=np.int64)
        for start in range(0, len(images), 1024):
            counts += np.bincount(images[start : start + 1024, c].numpy().ravel(), minlength=256)
        m = (counts @ values) / counts.sum()
        mean.append(round(m / 255, 4))
        std.append(round(float(np.sqrt(max(counts @ values**2 / counts.sum() - m * m, 0.0))) / 255, 4))
    return mean, std
