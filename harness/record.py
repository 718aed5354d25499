"""The run record (``result.json``): every field any command writes, what it means, the schema version a
record is written in, and the declared migrations that read older records (as ``harness/settings.py`` does
for configurations). Committed evidence is never rewritten: it is read through ``migrate``.

Versions: 1, records made before the record named its version (every committed run older than this module);
2, ``schema_version`` written, the ``data`` block (what the run's splits contain), and for a method with
mechanism scalars ``mechanisms`` and ``warnings``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypedDict

SCHEMA_VERSION = 2

FIELDS: dict[str, tuple[Any, str]] = {  # every field: its type, what it means
    "schema_version": (int, "the version of this schema the record was written in"),
    "run_id": (str, "its run directory's name"),
    "kind": (str, "train (harness run) or eval (harness eval: another benchmark or head for a trained run)"),
    "method": (str, "the registered method"),
    "benchmark": (str, "the benchmark scored (a benchmark file's: its name)"),
    "trained_on": (str, "the benchmark trained on (the source run's, for an eval record)"),
    "source_run": (str, "an eval record's trained run (its run id)"),
    "seed": (int, "the training seed"),
    "config_hash": (str, "the configuration's hash (an eval record's: the source's and the evaluation's together)"),
    "head": (str, "the evaluation head"),
    "distance": (str, "the prototype head's distance"),
    "status": (str, "running, ok or failed"),
    "reason": (Optional[str], "why a failed run failed (None otherwise)"),
    "started": (str, "when the run started (UTC, ISO 8601)"),
    "finished": (str, "when it ended, ok or failed"),
    "device": (str, "the device it ran on, in words"),
    "threads": (int, "CPU threads"),
    "precision": (str, "train.precision"),
    "compiled": (bool, "train.compile"),
    "world_size": (int, "processes of the run"),
    "backend": (Optional[str], "their collective backend (None: one process)"),
    "devices": (list, "every process's host and device"),
    "platform": (str, "operating system and torch"),
    "kernels": (
        dict,
        "what an exact replay needs: kernel level, threads, CPU vendor and model, torch (harness/kernels.py)",
    ),
    "host": (str, "the machine's name"),
    "command": (str, "the command line that made it"),
    "versions": (dict, "the versions of Python, torch and the libraries"),
    "git": (dict, "the harness's commit and whether its checkout was changed"),
    "data": (dict, "the dataset, the content digest of each split read and the files and decoders behind them"),
    "benchmark_file": (str, "a benchmark file's path (none for the harness's own benchmarks)"),
    "benchmark_sha256": (str, "the digest of that file's definition (and an image folder's images)"),
    "steps": (int, "training steps made"),
    "train_seconds": (float, "training time, without validation"),
    "val_accuracy": (Optional[float], "validation accuracy at the end (None: no validation split)"),
    "budget_exhausted": (bool, "whether train.budget_minutes stopped training before train.steps"),
    "flops": (dict, "FLOPs: per training step and phase, setup, training total, budget and test scoring"),
    "mechanisms": (dict, "medians over the second half of training of the method's mechanism scalars"),
    "warnings": (list, "each mechanism whose median is below the floor the method declares"),
    "accuracy": (float, "mean accuracy over the test episodes (fraction)"),
    "error": (float, "1 - accuracy"),
    "ci95": (float, "the 95% confidence interval of the accuracy over episodes (half width, fraction)"),
    "episodes": (int, "test episodes scored"),
    "queries_per_episode": (int, "queries in each test episode"),
    "episode_digest": (str, "the digest of the test episodes (tables never mix two)"),
    "eval_seconds": (float, "time to score the test episodes"),
    "wall_seconds": (float, "the command's time from the running record to the terminal one"),
    "peak_memory_mb": (float, "peak resident memory (CPU) or allocated memory (CUDA)"),
}

# ``result.json`` as a type (``run_dir`` is added when read).
RunRecord = TypedDict("RunRecord", {**{name: tp for name, (tp, _) in FIELDS.items()}, "run_dir": str}, total=False)

# Fields every record of version 2 has from its running record on, whatever made it (run, eval): the provenance.
PROVENANCE = (
    "schema_version", "run_id", "kind", "method", "benchmark", "trained_on", "seed", "config_hash", "head",
    "distance", "status", "reason", "started", "device", "threads", "kernels", "host", "command", "versions",
    "git", "data",
)  # fmt: skip
# Fields every terminal (ok) record has, whatever made it.
TERMINAL = ("finished", "wall_seconds", "peak_memory_mb", "flops", "steps", "train_seconds")


def from_version_1(record: dict) -> dict:
    """Records of version 1 may lack fields later versions always write, which they ran without."""
    return {"kind": "train", "trained_on": record.get("benchmark"), **record}


MIGRATIONS: tuple[tuple[int, Callable[[dict], dict]], ...] = ((2, from_version_1),)


def migrate(record: dict) -> dict:
    """A record as the current schema reads it: the declared migrations newer than its version, oldest first."""
    version = record.get("schema_version", 1)
    for target, migration in MIGRATIONS:
        if version < target:
            record = migration(record)
    return record
