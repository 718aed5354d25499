"""Datasets: fetching raw files (URL or local mirror, checksum-verified), decoding them once into
compact uint8 tensors cached on disk, and loading splits from that cache.

Layout under the data root (``data.root``, else ``$HARNESS_DATA``, else ``~/.cache/fewshot-harness``)::

    <root>/<folder>/raw/<file>                      downloaded or user-provided files
    <root>/<folder>/cache/<dataset>/<split>-<size>px.pt   decoded images (uint8 N×C×H×W) + labels
    <root>/<folder>/cache/<dataset>/<split>-<size>px.pt.sha256   its SHA256, checked on every load

``HARNESS_DATA_MIRROR=<dir>`` replaces every remote URL by ``<dir>/<folder>/<file>`` (offline use).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import content, linked
from harness.data.integrity import RawFileError, cache_problem, drop_cache, file_digest, load_cache, save_cache
from harness.data.remote import RemoteFile, fetch
from harness.errors import DataError


def data_root(configured: str = "") -> Path:
    """The data root: the configured path, else $HARNESS_DATA, else the user's cache dir."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("HARNESS_DATA"):
        return Path(os.environ["HARNESS_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fewshot-harness"


@dataclass(frozen=True)
class SplitInfo:
    """What a split holds, known before loading it (used to validate configs up front)."""

    classes: int | None  # None where only loading the files tells
    per_class: int | None  # images in the smallest class
    smallest: str = ""  # that class (its folder), where known


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file of a dataset: ``state`` is ok, unpinned (present, no published
    checksum), missing or bad; a bad file comes with what is wrong and the command that repairs it."""

    kind: str  # "raw" or "cache"
    path: Path
    state: str
    detail: str = ""
    repair: str = ""


@dataclass
class RawSplit:
    """A decoded split before resizing: images as uint8 arrays (H×W or H×W×C) or PIL images."""

    images: list[Any]
    labels: np.ndarray
    class_names: list[str]
    class_groups: np.ndarray | None = None
    group_names: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)  # a local copy's files → SHA256, for the manifest (content.py)


@dataclass
class ImageSet:
    """A split in memory: ``images`` uint8 N×C×H×W, ``labels`` int64 N (0..classes-1)."""

    images: Any  # torch.Tensor
    labels: Any  # torch.Tensor
    class_names: list[str]
    class_groups: Any = None  # torch.Tensor [classes] of group ids, or None
    group_names: list[str] = field(default_factory=list)
    identity: str = ""  # "dataset/split" plus transforms; part of the episode digest (not the image size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Dataset:
    """Base class. Subclasses declare files and splits and implement :meth:`read_split`."""

    name: str = ""
    description: str = ""
    folder: str = ""  # raw-file folder (shared by datasets built from the same files)
    files: tuple[RemoteFile, ...] = ()
    splits: dict[str, SplitInfo] = {}
    channels: int = 1
    native_size: int = 0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    group_kind: str = ""  # what a class group is, e.g. "alphabet"
    cached: bool = True  # False for datasets generated in-process
    prepare_hint: str = ""  # how to turn a user's local copy into the expected files

    # ------------------------------------------------------------------ paths and status
    def raw_dir(self, root: Path) -> Path:
        return root / self.folder / "raw"

    def cache_dir(self, root: Path) -> Path:
        """Where the decoded caches and their manifest (harness/data/content.py) lie."""
        return root / self.folder / "cache" / self.name

    def cache_path(self, root: Path, split: str, size: int) -> Path:
        return self.cache_dir(root) / f"{split}-{size}px.pt"

    def cache_files(self, root: Path) -> list[Path]:
        """The decoded caches present (every split and size)."""
        return sorted(self.cache_dir(root).glob("*.pt"))

    def missing_files(self, root: Path) -> list[RemoteFile]:
        raw = self.raw_dir(root)
        return [f for f in self.files if not (raw / f.name).is_file()]

    def check(self, root: Path, deep: bool = True) -> list[FileCheck]:
        """Check every raw file against its published checksum (where one is pinned) and, where it was
        linked from a user's copy, against that file as prepared (``linked.source_problem``; ``deep``:
        hashed), and every decoded cache against its stored SHA256."""
        raw = self.raw_dir(root)
        prepared = linked.recorded(raw)
        checks = [self.raw_check(raw, remote, prepared.get(remote.name), deep) for remote in self.files]
        if all(c.state in ("ok", "unpinned") for c in checks):
            rebuild = f"`harness data prepare {self.name} --force` rebuilds it (a load also does)"
        else:
            rebuild = (
                f"`harness data download {self.name}` fetches the raw files and rebuilds it, or "
                f"`harness data prepare {self.name} --from PATH` decodes your own copy"
            )
        for path in self.cache_files(root):
            problem = cache_problem(path)
            checks.append(
                FileCheck("cache", path, "bad", problem, rebuild) if problem else FileCheck("cache", path, "ok")
            )
        return checks

    def raw_check(self, raw: Path, remote: RemoteFile, prepared: dict | None, deep: bool = True) -> FileCheck:
        """The verdict on one raw file: against the file it was prepared from (``prepared``, its entry in
        ``prepared-from.json``), then against its published checksum, unless it was prepared as a copy
        verified by content (:meth:`verify_content`)."""
        path = raw / remote.name
        if prepared and (problem := linked.source_problem(path, prepared, deep)):
            return FileCheck("raw", path, "bad", problem, linked.prepare_again(raw, self.name))
        if not path.is_file():
            return FileCheck("raw", path, "missing")
        if prepared and prepared.get("verified") == "content":
            return FileCheck("raw", path, "ok", "verified by its decoded content")
        if not remote.pinned:
            return FileCheck("raw", path, "unpinned", "no published checksum; checked when decoded")
        if problem := remote.problem(path):
            return FileCheck("raw", path, "bad", problem, f"`harness data download {self.name}` fetches it again")
        return FileCheck("raw", path, "ok")

    def status(self, root: Path) -> dict:
        """The state of each raw file and decoded cache, by content (see :meth:`check`)."""
        checks = self.check(root, deep=False)
        files = {c.path.name: c.state for c in checks if c.kind == "raw"}
        caches = {c.path.name: c.state for c in checks if c.kind == "cache"}
        raw_ok = all(state in ("ok", "unpinned") for state in files.values())
        native_ok = all(caches.get(self.cache_path(root, s, self.native_size).name) == "ok" for s in self.splits)
        return {
            "dataset": self.name,
            "files": files,
            "cached": caches,
            "content": content.read_manifest(self.cache_dir(root)).get("splits", {}),
            "ready": not self.cached or raw_ok or native_ok,
            "damaged": [c for c in checks if c.state == "bad"],
        }

    # ------------------------------------------------------------------ fetching
    def download(self, root: Path, progress: bool = True, force: bool = False) -> list[Path]:
        """Fetch the files that are missing or fail their published checksum (every file with
        ``force``) from the mirror or their URLs, verify them, and move them into place."""
        raw, prepared = self.raw_dir(root), linked.recorded(self.raw_dir(root))
        fetched = []
        for remote in self.files:
            if force or self.raw_check(raw, remote, prepared.get(remote.name), deep=False).state in ("missing", "bad"):
                fetched.append(fetch(remote, raw, self.folder, progress=progress))
        linked.forget(raw, [path.name for path in fetched])
        return fetched

    def prepare_from(self, root: Path, source: Path) -> list[Path]:
        """Take a user's local copy: a folder holding the expected files (verified, linked into the raw
        folder rather than copied, see harness/data/linked.py, and decoded), or a layout
        :meth:`read_local_copy` understands (decoded straight into the cache). Returns the caches written."""
        source = Path(source).expanduser()
        if not source.is_dir():
            raise DataError(f"--from {source}: not a folder. {self.prepare_hint}")
        found = {f.name: sorted(source.rglob(f.name)) for f in self.files}
        if all(found.values()):
            verified = {
                remote.name: self.verify_content(remote.name, found[remote.name][0])
                for remote in self.files
                if remote.problem(found[remote.name][0])
            }
            linked.link_sources(self.raw_dir(root), {name: paths[0] for name, paths in found.items()}, source, verified)
            return self.build_caches(root, force=True)
        written = []
        for split in self.splits:
            try:
                local = self.read_local_copy(source, split)
            except RawFileError as exc:
                raise DataError(f"{exc}. Prepare from an unmodified copy of the published files.") from None
            if local is None:
                missing = ", ".join(name for name, paths in found.items() if not paths)
                raise DataError(f"--from {source}: {missing} not found in it. {self.prepare_hint}")
            for stale in self.cache_files(root):  # caches decoded from an earlier copy
                if _cache_size(stale, split):
                    drop_cache(stale)
            imageset = _to_imageset(local, self.native_size, self.channels, f"{self.name}/{split}")
            written.append(self._save(root, split, imageset, local.source))
        return written

    def read_local_copy(self, source: Path, split: str) -> RawSplit | None:
        """Decode ``split`` from another layout researchers keep (None: not understood)."""
        return None

    def verify_content(self, name: str, path: Path) -> dict:
        """A user's file ``name`` that fails its published checksum: accepted where a dataset can check its
        decoded content instead (returns what to record of it), else one error naming it."""
        next(remote for remote in self.files if remote.name == name).verify(path)
        return {}

    def ensure_available(self, root: Path, download: bool = False) -> None:
        """Raise the missing-dataset error now, before any run directory is made; with ``download``,
        fetch the missing files instead (from the mirror or their URLs, checksum-verified), saying so."""
        if self.cached and self.missing_files(root):
            native = [self.cache_path(root, split, self.native_size) for split in self.splits]
            if all(p.is_file() for p in native):
                return
            if not download:
                raise self.missing_error(root)
            mirror = os.environ.get("HARNESS_DATA_MIRROR")
            source = f"the mirror {mirror}" if mirror else "their public URLs"
            print(
                f"harness: {self.name} is not under {root}: downloading {', '.join(f.name for f in self.missing_files(root))} "
                f"from {source} into {self.raw_dir(root)} (checksum-verified; --no-download turns this off)",
                file=sys.stderr,
                flush=True,
            )
            try:
                self.download(root)
            except DataError as exc:
                raise DataError(f"fetching {self.name} on first use failed: {exc}") from None

    def definition(self) -> dict:
        """What a benchmark hash covers of this dataset (an image folder adds its images' SHA256)."""
        return {"dataset": self.name}

    def missing_error(self, root: Path) -> DataError:
        names = ", ".join(f.name for f in self.missing_files(root))
        gone = [
            entry["source"]
            for name, entry in linked.recorded(self.raw_dir(root)).items()
            if not (self.raw_dir(root) / name).exists()
        ]
        return DataError(
            f"dataset {self.name} is not present under {root}: expected {names} in {self.raw_dir(root)}"
            + (f" (linked from {', '.join(gone)}, which {'is' if len(gone) == 1 else 'are'} gone)" if gone else "")
            + ". "
            f"Fetch it with `harness data download {self.name}` (set HARNESS_DATA_MIRROR=<dir> to use a "
            f"local mirror laid out as <dir>/{self.folder}/<file>) or convert your own copy with "
            f"`harness data prepare {self.name} --from PATH`. {self.prepare_hint}".rstrip()
        )

    def replace_hint(self) -> str:
        return (
            f"Replace it: `harness data download {self.name} --force` fetches the published files again, "
            f"or `harness data prepare {self.name} --from PATH` decodes your own copy."
        )

    # ------------------------------------------------------------------ decoding and loading
    def read_split(self, raw: Path, split: str) -> RawSplit:
        """Decode ``split`` from the raw files in ``raw``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read_split")

    def fixed_episodes(self, split: str, imageset: ImageSet):
        """Official test episodes shipped with the dataset (e.g. Lake's runs), else None."""
        return None

    def load(self, root: Path, split: str, size: int = 0) -> ImageSet:
        """The split as an ImageSet at ``size`` px, from its cache when that matches its stored SHA256,
        else decoded (again) into the cache, saying so on stderr when a cache was rebuilt."""
        if split not in self.splits:
            raise DataError(f"{self.name} has no split '{split}' (it has {', '.join(self.splits)})")
        size = size or self.native_size
        identity = f"{self.name}/{split}"
        if not self.cached:
            return _to_imageset(self.read_split(Path(), split), size, self.channels, identity)
        path = self.cache_path(root, split, size)
        if path.is_file():
            problem = cache_problem(path)
            if problem is None:
                try:
                    return ImageSet(identity=identity, **load_cache(path))
                except Exception as exc:  # it matches its checksum, yet this torch cannot read it: rebuild
                    problem = f"cannot be loaded ({type(exc).__name__})"
            _say_rebuilding(path, problem)
        imageset = _to_imageset(self._read_source(root, split), size, self.channels, identity)
        self._save(root, split, imageset)
        return imageset

    def build_caches(self, root: Path, force: bool = False) -> list[Path]:
        """Decode every split into its native-size cache and rebuild each cache (any size) that fails
        its checksum, or every cache with ``force``. Returns the caches written."""
        if not self.cached:
            return []
        if force and self.missing_files(root):
            raise DataError(
                f"--force rebuilds {self.name}'s caches from its raw files, but "
                f"{', '.join(f.name for f in self.missing_files(root))} are not in {self.raw_dir(root)}. Fetch them "
                f"with `harness data download {self.name}`, or decode your own copy with `harness data prepare {self.name} --from PATH`."
            )
        written = []
        for split in self.splits:
            sizes = {self.native_size} | {size for path in self.cache_files(root) if (size := _cache_size(path, split))}
            paths = {size: self.cache_path(root, split, size) for size in sorted(sizes)}
            problems = {size: cache_problem(path) for size, path in paths.items()} if not force else {}
            stale = [size for size in paths if force or problems[size]]
            if not stale:
                continue
            for size in stale:
                if problems.get(size) and paths[size].is_file():
                    _say_rebuilding(paths[size], problems[size])
            source = self._read_source(root, split)
            for size in stale:
                self._save(root, split, _to_imageset(source, size, self.channels, f"{self.name}/{split}"))
                written.append(paths[size])
        return written

    def _save(self, root: Path, split: str, imageset: ImageSet, source: dict | None = None) -> Path:
        """Write ``imageset`` as ``split``'s cache at its size; at the native size its content and ``source``
        (the files it was decoded from: default the raw files) go into the manifest."""
        size = imageset.images.shape[-1]
        path = self.cache_path(root, split, size)
        save_cache(_imageset_state(imageset), path)
        if size == self.native_size:
            content.write_split(self.cache_dir(root), split, imageset, source or self.raw_digests(root))
        return path

    def raw_digests(self, root: Path) -> dict[str, str]:
        """Each raw file present → its SHA256 (as recorded when it was prepared or pinned, else computed)."""
        raw, prepared = self.raw_dir(root), linked.recorded(self.raw_dir(root))
        digests = {}
        for remote in self.files:
            if (raw / remote.name).is_file():
                entry = prepared.get(remote.name, {})
                digests[remote.name] = entry.get("sha256") or remote.sha256 or file_digest(raw / remote.name)
        return digests

    def provenance(self, root: Path, splits: list[str]) -> dict:
        """A run record's ``data`` block: the content digests of ``splits`` and their files (see content.py)."""
        if self.cached:
            return content.record(self.cache_dir(root), self.name, splits)
        found = {}
        for split in splits:
            imageset = self.load(root, split)
            digests = content.class_digests(imageset.images.numpy(), imageset.labels.numpy(), imageset.class_names)
            found[split] = content.split_digest(digests)
        return {"dataset": self.name, "content_sha256": found, "files": {}, "decoders": {}}

    def _read_source(self, root: Path, split: str) -> RawSplit:
        """Decoded images from the raw files (checked against their published checksums first), else
        from the native-size cache."""
        raw = self.raw_dir(root)
        if self.missing_files(root):
            native = self.cache_path(root, split, self.native_size)
            if not native.is_file():
                raise self.missing_error(root)
            if problem := cache_problem(native):
                raise DataError(
                    f"decoded cache {native} {problem}, and the raw files to rebuild it from are not in {raw}. "
                    f"Fetch them with `harness data download {self.name}` (the cache is then rebuilt), or decode "
                    f"your own copy again with `harness data prepare {self.name} --from PATH`."
                )
            cached = ImageSet(**load_cache(native))
            images = cached.images.permute(0, 2, 3, 1).numpy()
            if self.channels == 1:
                images = images[..., 0]  # grey images as H×W, as decoded
            groups = None if cached.class_groups is None else cached.class_groups.numpy()
            return RawSplit(list(images), cached.labels.numpy(), cached.class_names, groups, cached.group_names)
        prepared = linked.recorded(raw)
        for remote in self.files:
            check = self.raw_check(raw, remote, prepared.get(remote.name), deep=False)
            if check.state == "bad" and remote.name in prepared:
                raise DataError(f"{check.path}: {check.detail}; {check.repair}")
            if check.state == "bad":
                raise DataError(
                    f"{check.path}: {check.detail}: the file is corrupt or truncated. "
                    f"Replace it with `harness data download {self.name}`, which fetches it again."
                )
        try:
            return self.read_split(raw, split)
        except RawFileError as exc:
            raise DataError(f"{exc}. {self.replace_hint()}") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise DataError(
                f"could not decode {self.name} from {raw} ({type(exc).__name__}: {exc}); a raw file may be "
                f"corrupt: `harness data download {self.name} --force` fetches the published files again"
            ) from None


# ---------------------------------------------------------------------- helpers


def _to_imageset(raw: RawSplit, size: int, channels: int, identity: str) -> ImageSet:
    import torch
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(raw.images), size, size, channels), dtype=np.uint8)
    for i, image in enumerate(raw.images):
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(image, dtype=np.uint8).reshape(size, size, channels)
    groups = None if raw.class_groups is None else torch.as_tensor(np.asarray(raw.class_groups), dtype=torch.long)
    return ImageSet(
        images=torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(),
        labels=torch.as_tensor(np.asarray(raw.labels), dtype=torch.long),
        class_names=list(raw.class_names),
        class_groups=groups,
        group_names=list(raw.group_names),
        identity=identity,
    )


def _imageset_state(imageset: ImageSet) -> dict:
    return {
        "images": imageset.images,
        "labels": imageset.labels,
        "class_names": imageset.class_names,
        "class_groups": imageset.class_groups,
        "group_names": imageset.group_names,
    }


def _say_rebuilding(path: Path, problem: str) -> None:
    print(f"harness: decoded cache {path} {problem}; rebuilding it", file=sys.stderr)


def _cache_size(path: Path, split: str) -> int | None:
    """The image size of a cache file of ``split`` (``<split>-<size>px.pt``), else None."""
    name, _, size = path.name.rpartition("-")
    return int(size[:-5]) if name == split and size.endswith("px.pt") and size[:-5].isdigit() else None
