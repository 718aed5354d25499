"""Integrity of the files a dataset reads and writes.

Each decoded cache ``<split>-<size>px.pt`` has a sidecar ``<split>-<size>px.pt.sha256`` (the
``sha256sum`` format) written with it; a cache is used only while its SHA256 matches, otherwise it is
rebuilt. Raw files that cannot be decoded raise :class:`RawFileError`, which names the file.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.files import atomic_path, write_text

CHECKSUM_SUFFIX = ".sha256"


class RawFileError(DataError):
    """A raw file that cannot be decoded (corrupt, truncated, or refused); the message names it."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")


def file_digest(path: Path, algo: str = "sha256") -> str:
    """The hex digest of the file at ``path``."""
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(cache: Path) -> Path:
    """Where the SHA256 of ``cache`` is stored."""
    return cache.with_name(cache.name + CHECKSUM_SUFFIX)


def save_cache(state: dict, path: Path) -> None:
    """Write a decoded cache and its checksum. The checksum goes first and the cache is renamed into
    place last, so a cache is never visible without its checksum. torch.save into an open file gives
    the same bytes for the same tensors (saving to a path embeds the temporary file's name), so
    processes that build one cache at once write identical files."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
        write_text(checksum_path(path), f"{file_digest(tmp)}  {path.name}\n")


def cache_problem(path: Path) -> str | None:
    """Why the cache at ``path`` cannot be used (None: it matches its stored SHA256)."""
    if not path.is_file():
        return "is missing"
    try:
        recorded = checksum_path(path).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return f"has no stored checksum ({checksum_path(path).name})"
    try:
        digest = file_digest(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if digest != recorded:
        return "does not match its stored SHA256 (truncated or modified)"
    return None


def load_cache(path: Path) -> dict[str, Any]:
    """A verified cache's contents, memory-mapped (tensors, lists and strings only)."""
    import torch

    return torch.load(path, mmap=True, weights_only=True)


def drop_cache(path: Path) -> None:
    """Remove a cache and its checksum."""
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


@contextmanager
def open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """``zipfile.ZipFile(path)``; a damaged archive (also found while reading a member) raises
    RawFileError naming ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise RawFileError(
            path, f"not a readable zip archive: truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None
