"""What a dataset's images *are*, independent of the files that carry them: a SHA256 of the decoded pixels
per class and per split, and the manifest that keeps them beside the decoded caches.

Two copies of Omniglot in different containers (Lake's zips, re-packed zips, an unpacked folder) decode to
the same pixels and so to the same digests; a copy whose pixels differ is named by its first differing
class. A run's record takes its data block (:func:`record`) from the manifest, so every number names the
content it was measured on and the files that content came from.

The manifest, ``<root>/<folder>/cache/<dataset>/manifest.json``, is written with each native-size cache:
per split its content digest, image and class counts, the SHA256 of the files it was decoded from (for a
folder of images, one SHA256 over every file's) and the versions of the decoders that made the pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from harness import files

MANIFEST = "manifest.json"


def class_digests(images, labels, class_names: list[str]) -> dict[str, str]:
    """Class name → SHA256 over its images in order (each as its shape and uint8 bytes)."""
    images, labels = np.asarray(images), np.asarray(labels)
    digests = {}
    for index, name in enumerate(class_names):
        digest = hashlib.sha256()
        for image in images[labels == index]:
            image = np.ascontiguousarray(image, dtype=np.uint8)
            digest.update(repr(image.shape).encode("ascii"))
            digest.update(image.tobytes())
        digests[name] = digest.hexdigest()
    return digests


def split_digest(digests: dict[str, str]) -> str:
    """One SHA256 for a split: over its classes' names and digests, in class order."""
    return hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in digests.items()).encode()).hexdigest()


def first_difference(found: dict[str, str], expected: dict[str, str]) -> str | None:
    """Why ``found`` (class → digest) is not ``expected``: the first class missing, extra or with other
    pixels, in sorted order (None: they agree)."""
    for name in sorted(set(found) | set(expected)):
        if name not in found:
            return f"{name} is missing"
        if name not in expected:
            return f"{name} is not part of the published set"
        if found[name] != expected[name]:
            return f"{name}: its decoded pixels differ from the published drawings"
    return None


def decoders() -> dict[str, str]:
    """The versions of what decodes images (Pillow and its JPEG and PNG libraries)."""
    import PIL
    from PIL import features

    versions = {"pillow": PIL.__version__}
    for name, feature in (("libjpeg", "jpg"), ("libjpeg-turbo", "libjpeg_turbo"), ("zlib", "zlib")):
        version = features.version(feature)
        if version:
            versions[name] = version
    return versions


def folder_digest(paths: dict[str, Path]) -> str:
    """One SHA256 over many files: each file's name and SHA256, in name order (a folder of images)."""
    from harness.data.integrity import file_digest

    return hashlib.sha256(
        "".join(f"{name} {file_digest(paths[name])}\n" for name in sorted(paths)).encode()
    ).hexdigest()


def read_manifest(cache_dir: Path) -> dict:
    try:
        return json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_split(cache_dir: Path, split: str, imageset, source: dict) -> None:
    """Record ``split``'s content (``imageset`` at native size) and ``source`` (its files' SHA256) in the manifest."""
    digests = class_digests(imageset.images.numpy(), imageset.labels.numpy(), imageset.class_names)
    manifest = read_manifest(cache_dir)
    manifest.setdefault("splits", {})[split] = {
        "content_sha256": split_digest(digests),
        "images": int(len(imageset.labels)),
        "classes": len(imageset.class_names),
        "files": source,
        "decoders": decoders(),
    }
    files.write_json(cache_dir / MANIFEST, manifest)


def record(cache_dir: Path, dataset: str, splits: list[str]) -> dict:
    """A run record's ``data`` block: the dataset, the content digest of each split it read, the files that
    content was decoded from and the decoders' versions ({} entries where the manifest has none)."""
    known = read_manifest(cache_dir).get("splits", {})
    used = [known[split] for split in splits if split in known]
    return {
        "dataset": dataset,
        "content_sha256": {split: known[split]["content_sha256"] for split in splits if split in known},
        "files": {name: digest for facts in used for name, digest in facts.get("files", {}).items()},
        "decoders": {name: version for facts in used for name, version in facts.get("decoders", {}).items()},
    }
