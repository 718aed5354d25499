"""Atomic file writes: write under a temporary name in the same folder, then rename into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

# While a ``batch()`` is open: the (temporary, final) paths written so far, moved into place together.
_BATCH: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("_BATCH", default=None)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds
    (inside ``batch()``: only when the whole batch succeeds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    pending = _BATCH.get()
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        if pending is None:
            os.replace(tmp, path)
        else:
            pending.append((tmp, path))
            tmp = None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextmanager
def batch() -> Iterator[None]:
    """All-or-nothing output: files written atomically inside the block stay under temporary names
    and replace their targets only when the whole block succeeds; on an error every existing file
    is left byte-for-byte as it was. A staged directory (``stage_dir``) is swapped in the same way."""
    if _BATCH.get() is not None:  # nested: the outer batch decides
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _BATCH.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    finally:
        _BATCH.reset(token)
    for tmp, path in pending:
        if tmp.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)


@contextmanager
def stage_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path`` that replaces ``path`` (a directory)
    when the block succeeds, or when the enclosing ``batch()`` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    pending = _BATCH.get()
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if pending is None:
            with batch():
                _BATCH.get().append((tmp, path))
        else:
            pending.append((tmp, path))
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
