"""The result store: one directory per run under a runs directory.

``<runs>/<run id>/`` holds ``config.yaml`` (the resolved configuration), ``result.json`` (status
running|ok|failed, scores and provenance), ``episodes.csv`` (accuracy per test episode),
``trials.npy`` (bool [episodes, queries]: each query right or wrong), ``checkpoint.pt``,
``train_log.csv`` and ``error.log`` for failures. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from pathlib import Path

import numpy as np
import yaml

from harness import files

RESULT, CONFIG, EPISODES, TRIALS = "result.json", "config.yaml", "episodes.csv", "trials.npy"
CHECKPOINT, TRAIN_LOG, ERROR_LOG = "checkpoint.pt", "train_log.csv", "error.log"


def new_run_id(method: str, benchmark: str, seed: int, config_hash: str) -> str:
    """A unique, sortable run id: time, method, benchmark, seed, config hash, random suffix."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{benchmark}-s{seed}-{config_hash[:8]}-{secrets.token_hex(2)}"


def write_config(run_dir: Path, tree: dict) -> None:
    files.write_text(run_dir / CONFIG, yaml.safe_dump(tree, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    return yaml.safe_load((Path(run_dir) / CONFIG).read_text())


def write_record(run_dir: Path, record: dict) -> None:
    files.write_json(Path(run_dir) / RESULT, record)


def read_record(run_dir: Path) -> dict | None:
    """The run's record with ``run_dir`` added, or None if it has none (or an unreadable one)."""
    path = Path(run_dir) / RESULT
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    record["run_dir"] = str(run_dir)
    return record


def write_scores(run_dir: Path, accuracies: np.ndarray, correct: np.ndarray) -> None:
    """Per-episode accuracies (CSV) and per-query correctness (``trials.npy``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["episode", "accuracy", "correct", "queries"])
    for i, (acc, row) in enumerate(zip(accuracies, correct)):
        writer.writerow([i, f"{acc:.6f}", int(row.sum()), len(row)])
    files.write_text(Path(run_dir) / EPISODES, out.getvalue())
    with files.atomic_path(Path(run_dir) / TRIALS) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(correct, dtype=bool))


def read_scores(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(per-episode accuracies, per-query correctness) of a finished run."""
    correct = np.load(Path(run_dir) / TRIALS)
    return correct.mean(axis=1), correct


def iter_records(runs_dir: Path) -> list[dict]:
    """Every readable record under ``runs_dir``, oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records = [read_record(p) for p in sorted(runs_dir.iterdir()) if (p / RESULT).is_file()]
    return [r for r in records if r is not None]


def find_finished(runs_dir: Path, config_hash: str, seed: int) -> dict | None:
    """The newest ``ok`` record with this config hash and seed, if any."""
    matches = [r for r in iter_records(runs_dir) if r.get("config_hash") == config_hash and r.get("seed") == seed
               and r.get("status") == "ok"]
    return matches[-1] if matches else None


def records_frame(records: list[dict]):
    """Records as a pandas DataFrame with the columns people read first."""
    import pandas as pd

    rows = []
    for r in records:
        rows.append({
            "run": Path(r["run_dir"]).name,
            "method": r.get("method"),
            "benchmark": r.get("benchmark"),
            "seed": r.get("seed"),
            "head": r.get("head"),
            "status": r.get("status"),
            "accuracy": r.get("accuracy"),
            "ci95": r.get("ci95"),
            "episodes": r.get("episodes"),
            "train_s": r.get("train_seconds"),
            "reason": r.get("reason"),
        })
    return pd.DataFrame(rows)
