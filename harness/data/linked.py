"""Raw files taken from a user's copy (``harness data prepare NAME --from DIR``) without copying their
bytes: each is hard-linked into the raw folder where the two are on one filesystem, else symlinked to
its absolute path. ``<raw>/prepared-from.json`` records, per file, its source, the link, and the size,
modification time and SHA256 it had, so that a source changed or gone since is one error naming the
file and the fix (``harness data status`` and decoding compare size and modification time, hashing
where they differ; ``harness data verify`` hashes every such file).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from harness import files
from harness.data.integrity import file_digest

RECORD = "prepared-from.json"


def link_sources(raw: Path, sources: dict[str, Path], folder: Path, verified: dict[str, dict] | None = None) -> None:
    """Put each source file (name in ``raw`` → its path) into ``raw`` as a link, then record them (the
    ``--from`` ``folder`` too, for the fix an error prints); ``verified`` adds, per file accepted by its
    decoded content rather than its published checksum, what that check found."""
    raw.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, source in sources.items():
        source = source.resolve()
        how = place_link(source, raw / name)
        stat = source.stat()
        entries[name] = {
            "source": str(source),
            "link": how,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": file_digest(source),
            **(verified or {}).get(name, {}),
        }
    files.write_json(raw / RECORD, {"from": str(folder.resolve()), "files": {**recorded(raw), **entries}})


def place_link(source: Path, target: Path) -> str:
    """Replace ``target`` by a hard link to ``source``, or where that cannot be (another filesystem, a
    filesystem without hard links) a symlink to it; returns which."""
    if target.exists() and target.resolve() == source:
        return "in place"
    files.clear_litter(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        try:
            os.link(source, tmp)
            how = "hard link"
        except OSError:
            os.symlink(source, tmp)
            how = "symlink"
        os.replace(tmp, target)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return how


def recorded(raw: Path) -> dict[str, dict]:
    """File name → what was recorded when it was prepared from a user's copy (empty: none was)."""
    try:
        return json.loads((raw / RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def forget(raw: Path, names: list[str]) -> None:
    """Drop the records of files replaced by other means (a download)."""
    entries = recorded(raw)
    if not any(name in entries for name in names):
        return
    record = json.loads((raw / RECORD).read_text(encoding="utf-8"))
    record["files"] = {name: entry for name, entry in entries.items() if name not in names}
    files.write_json(raw / RECORD, record)


def source_problem(path: Path, entry: dict, deep: bool = True) -> str | None:
    """Why the raw file ``path``, recorded as ``entry``, is no longer the file it was prepared from (None:
    it is). Without ``deep``, a file of the recorded size and modification time is taken as unchanged."""
    if not path.exists():
        return f"its source {entry['source']} is gone (it was linked from there)"
    stat = path.stat()
    if stat.st_size != entry["size"]:
        return f"its source {entry['source']} changed since it was prepared ({entry['size']:,} bytes then, {stat.st_size:,} now)"
    if not deep and stat.st_mtime_ns == entry["mtime_ns"]:
        return None
    if file_digest(path) != entry["sha256"]:
        return f"its source {entry['source']} changed since it was prepared (its SHA256 differs from the recorded one)"
    return None


def prepare_again(raw: Path, dataset: str) -> str:
    """The fix for a changed or vanished source."""
    try:
        folder = json.loads((raw / RECORD).read_text(encoding="utf-8"))["from"]
    except (OSError, ValueError, KeyError, TypeError):
        folder = "PATH"
    return (
        f"restore the file, or prepare from an intact copy again: `harness data prepare {dataset} --from {folder}` "
        f"(or fetch the published files: `harness data download {dataset} --force`)"
    )
