"""Fetching a dataset's published files: from ``$HARNESS_DATA_MIRROR/<folder>/`` or their URLs, written under a
temporary name and moved into place only once their published checksum matches."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.data.integrity import file_digest
from harness.errors import DataError
from harness.files import atomic_path


@dataclass(frozen=True)
class RemoteFile:
    """A file a dataset needs, where to fetch it and how to verify it."""

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None  # used where only an MD5 is published (torchvision's Omniglot sums)

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.md5)

    def problem(self, path: Path) -> str | None:
        """Why ``path`` does not match the published checksum (None: it matches, or none is published)."""
        for algo, expected in (("sha256", self.sha256), ("md5", self.md5)):
            if expected:
                digest = file_digest(path, algo)
                return None if digest == expected else f"{algo} mismatch (expected {expected}, got {digest})"
        return None

    def verify(self, path: Path) -> None:
        """Raise DataError if ``path`` does not match the published checksum."""
        problem = self.problem(path)
        if problem:
            raise DataError(
                f"{self.name}: {problem}; the file is corrupt or truncated and was not kept. Fetch it again."
            )


def fetch(remote: RemoteFile, dest_dir: Path, folder: str, progress: bool = True) -> Path:
    """Copy ``remote`` from ``$HARNESS_DATA_MIRROR/<folder>/`` or download its URL, then verify.

    Nothing partial is left behind: the file is written under a temporary name and only renamed
    into place once its checksum matches.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / remote.name
    mirror = os.environ.get("HARNESS_DATA_MIRROR")
    if mirror:
        source = Path(mirror).expanduser() / folder / remote.name
        if not source.is_file():
            raise DataError(
                f"HARNESS_DATA_MIRROR={mirror} has no {folder}/{remote.name} (looked for {source}). "
                "Put the file there, or unset HARNESS_DATA_MIRROR to download from " + remote.url
            )
        _copy_verified(source, target, remote)
        return target
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                _download(remote.url, out, remote.name, progress)
            remote.verify(tmp)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"downloading {remote.url} failed: {exc}") from None
    return target


def _download(url: str, out: io.BufferedWriter, label: str, progress: bool) -> None:
    import requests
    from tqdm import tqdm

    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
            received = 0
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise DataError(f"{label}: download truncated ({received} of {total} bytes); nothing was kept")


def _copy_verified(source: Path, target: Path, remote: RemoteFile) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        remote.verify(tmp)
