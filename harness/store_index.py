"""An index of a runs directory, so that reports over thousands of runs read each run's files once:
``<runs dir>/.harness-index.sqlite`` (SQLite, from the standard library) keeps per run directory the
signature of the files reports read (size and modification time of ``result.json``, ``config.yaml``,
``trials.npy``, ``episodes.csv`` and ``train_log.csv``), and at that signature the record, whether its
evidence was checked (``store.check_evidence``) and its flattened settings.

It is a cache and nothing else: an entry counts only while its run's files have the signature it was made
at, so a run written, resumed, edited or damaged since is read and checked again; a missing, stale or
unreadable index is rebuilt from the files; a runs directory that cannot be written is read without one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

INDEX = ".harness-index.sqlite"
SIGNED = ("result.json", "config.yaml", "trials.npy", "episodes.csv", "train_log.csv")  # what reports read
SCHEMA = 1


def signature(run_dir: Path) -> str:
    """The size and modification time of each file reports read (absent: "-")."""
    parts = []
    for name in SIGNED:
        try:
            stat = os.stat(run_dir / name)
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


class StoreIndex:
    """One runs directory's index: read whole when opened, written back (changed entries) by ``save``."""

    def __init__(self, runs_dir: Path):
        self.path = Path(runs_dir) / INDEX
        self.entries: dict[str, dict] = {}
        self.changed: set[str] = set()
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as db:
                if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA:
                    for name, sign, body in db.execute("SELECT run, signature, entry FROM runs"):
                        self.entries[name] = {"signature": sign, **json.loads(body)}
        except (sqlite3.Error, ValueError):
            self.entries = {}  # absent or unreadable: rebuilt from the files

    def get(self, run_dir: Path, sign: str) -> dict:
        """The entry of ``run_dir`` made at signature ``sign`` (empty when there is none: read the files)."""
        entry = self.entries.get(run_dir.name)
        return entry if entry and entry["signature"] == sign else {}

    def put(self, run_dir: Path, sign: str, **facts) -> None:
        entry = self.get(run_dir, sign)
        self.entries[run_dir.name] = {**entry, **facts, "signature": sign}
        self.changed.add(run_dir.name)

    def save(self) -> None:
        """Write the changed entries (and drop those of runs gone); an index that cannot be written is skipped."""
        if not self.changed:
            return
        try:
            with sqlite3.connect(self.path, timeout=5) as db:
                db.execute("CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, signature TEXT, entry TEXT)")
                db.execute(f"PRAGMA user_version = {SCHEMA}")
                db.executemany(
                    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?)",
                    [
                        (name, entry["signature"], json.dumps({k: v for k, v in entry.items() if k != "signature"}))
                        for name in sorted(self.changed)
                        for entry in [self.entries[name]]
                    ],
                )
                present = {p.name for p in self.path.parent.iterdir()}
                db.executemany("DELETE FROM runs WHERE run = ?", [(n,) for n in self.entries if n not in present])
            self.changed.clear()
        except (sqlite3.Error, OSError):
            pass  # a read-only store: reports read its files each time
