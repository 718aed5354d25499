"""Atomic file writes (write under a temporary name in the same folder, then rename into place) and file locks."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

# While a ``batch()`` is open: the (temporary, final) paths written so far, moved into place together.
_BATCH: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("_BATCH", default=None)


def clear_litter(path: Path) -> None:
    """Remove what a killed earlier write of ``path`` left beside it: its ``.<name>.*.part`` temporaries
    and ``.<name>.old`` (one writer per output: a new write of it starts clean)."""
    if not path.parent.is_dir():
        return
    temporary = re.compile(rf"\.{re.escape(path.name)}\.\w+\.part")  # any temporary name's random part
    litter = [p for p in path.parent.glob(f".{glob_escape(path.name)}.*.part") if temporary.fullmatch(p.name)]
    for stale in [*litter, path.with_name(f".{path.name}.old")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        elif stale.exists() or stale.is_symlink():
            stale.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds
    (inside ``batch()``: only when the whole batch succeeds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _BATCH.get() is None or not any(target == path for _, target in _BATCH.get()):
        clear_litter(path)
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


OWNER_MARK = ".harness-owned"  # in a folder the harness replaces as a whole: who made it


def check_owned(path: Path, owner: str) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty folder, or a folder ``owner`` made (its
    ``OWNER_MARK`` says so): a command deletes only what it made."""
    from harness.errors import ConfigError

    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise ConfigError(
            f"{path} is not a folder: {owner} writes a folder there and will not replace it; "
            "choose a new or empty folder"
        )
    mark = path / OWNER_MARK
    made_by = mark.read_text(encoding="utf-8").strip() if mark.is_file() else None
    if made_by == owner or not any(path.iterdir()):
        return
    entries = sum(1 for _ in path.iterdir())
    why = (
        f"it was made by {made_by}"
        if made_by
        else f"it holds {entries} entr{'y' if entries == 1 else 'ies'} and no {OWNER_MARK} file naming {owner}"
    )
    raise ConfigError(
        f"{path} is not a folder {owner} made ({why}), and replacing it would delete its contents; "
        "choose a new or empty folder"
    )


@contextmanager
def stage_dir(path: str | Path, owner: str) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path`` that replaces ``path`` (a directory)
    when the block succeeds, or when the enclosing ``batch()`` does. ``path`` must be absent, empty,
    or a folder ``owner`` made (``check_owned``); the new one is marked as ``owner``'s."""
    path = Path(path)
    check_owned(path, owner)
    pending = _BATCH.get()
    if pending and any(target.resolve() == path.resolve() for _, target in pending):
        from harness.errors import ConfigError

        raise ConfigError(
            f"{path} would be written twice by one command (two specs name it as their folder); give each its own"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_litter(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        (tmp / OWNER_MARK).write_text(owner + "\n", encoding="utf-8")
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
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    import errno

    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:  # torch's writer reports a full disk as an enforce failure (inline_container.cc)
            if shutil.disk_usage(tmp.parent).free < 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
            raise


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator:
    """Hold an exclusive ``flock`` on ``path`` (made if absent, never truncated; the OS releases it when the
    process ends, even on kill -9) and yield its open handle. ``wait=False``: BlockingIOError at once if another
    process holds it. A filesystem without ``flock`` raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
