"""The run store: one directory per run under a runs directory, and the one place that decides
which run of a configuration counts.

``<runs>/<run id>/`` holds ``config.yaml`` (the resolved configuration), ``result.json`` (status
running|ok|failed, scores and provenance), ``episodes.csv`` (accuracy per test episode),
``trials.npy`` (bool [episodes, queries]: each query right or wrong), ``checkpoint.pt``,
``train_log.csv`` and ``error.log`` for failures. Every file is written atomically.

Of several ``ok`` runs of one configuration (config hash) and seed, the *newest* counts: the latest
``finished`` time, then the larger run id (run ids start with the start time). Every command that
asks "is this run done?" (``run --resume``, sweeps, ``tune``, ``reproduce``) or "which runs count?"
(``results``, ``leaderboard``, ``table``, ``plot``) goes through ``RunStore``.

*Evidence* is the lightweight part of a run directory (everything but the checkpoint): what a
committed table needs to be regenerated and checked anywhere (``copy_evidence``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from harness import files, mechanisms
from harness.config import read_yaml
from harness.errors import HarnessError
from harness.record import RunRecord, migrate
from harness.store_index import StoreIndex, signature

RESULT, CONFIG, EPISODES, TRIALS = "result.json", "config.yaml", "episodes.csv", "trials.npy"
CHECKPOINT, TRAIN_LOG, ERROR_LOG = "checkpoint.pt", "train_log.csv", "error.log"
EVIDENCE_FILES = (CONFIG, RESULT, EPISODES, TRIALS, TRAIN_LOG)


def new_run_id(method: str, benchmark: str, seed: int, config_hash: str) -> str:
    """A unique, sortable run id: time, method, benchmark, seed, config hash, random suffix."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{benchmark}-s{seed}-{config_hash[:8]}-{secrets.token_hex(2)}"


def write_config(run_dir: Path, tree: dict) -> None:
    files.write_text(Path(run_dir) / CONFIG, yaml.safe_dump(tree, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    """A run's ``config.yaml`` (a mapping of setting groups), or one error naming it."""
    path = Path(run_dir) / CONFIG
    tree = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(tree, dict):
        raise HarnessError(
            f"{path} holds {type(tree).__name__}, not the mapping of setting groups a run stores; the run is damaged"
        )
    return tree


def write_record(run_dir: Path, record: dict) -> None:
    files.write_json(Path(run_dir) / RESULT, {k: v for k, v in record.items() if k != "run_dir"})


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record with ``run_dir`` added, or None if it has none (or an unreadable one)."""
    path = Path(run_dir) / RESULT
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    record = migrate(record)
    record["run_dir"] = str(run_dir)
    return record


def write_scores(run_dir: Path, accuracies, correct) -> None:
    """Per-episode accuracies (CSV) and per-query correctness (``trials.npy``)."""
    import numpy as np

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["episode", "accuracy", "correct", "queries"])
    for i, (acc, row) in enumerate(zip(accuracies, correct)):
        writer.writerow([i, f"{acc:.6f}", int(row.sum()), len(row)])
    files.write_text(Path(run_dir) / EPISODES, out.getvalue())
    with files.atomic_path(Path(run_dir) / TRIALS) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(correct, dtype=bool))


def read_scores(run_dir: Path):
    """(per-episode accuracies, per-query correctness) of a finished run, as numpy arrays."""
    import numpy as np

    correct = np.load(Path(run_dir) / TRIALS, allow_pickle=False)
    return correct.mean(axis=1), correct


def check_evidence(record: dict) -> None:
    """An ok run's files agree with its record, or one HarnessError naming the file: ``config.yaml`` is the
    configuration the record names (``check_identity``); ``trials.npy`` loads, has the record's episodes ×
    queries and gives its accuracy; every value in ``train_log.csv`` is a number."""
    import numpy as np

    run_dir = Path(record["run_dir"])
    try:
        config = read_config(run_dir)
    except (OSError, UnicodeDecodeError, HarnessError) as exc:
        raise HarnessError(f"{run_dir / CONFIG}: unreadable ({type(exc).__name__}); the run is damaged") from None
    if not isinstance(config, dict):
        raise HarnessError(f"{run_dir / CONFIG}: not a mapping of settings; the run is damaged")
    check_identity(record, config)
    accuracy, shape = record.get("accuracy"), (record.get("episodes"), record.get("queries_per_episode"))
    if accuracy is None and not (run_dir / TRIALS).exists():
        return  # eval.test=false: validated only, no test outcomes to check
    if (
        not isinstance(accuracy, (int, float))
        or isinstance(accuracy, bool)
        or not all(isinstance(n, int) for n in shape)
    ):
        raise HarnessError(
            f"{run_dir / RESULT}: an ok record without a numeric accuracy, episodes and "
            "queries_per_episode; the run is damaged: re-run it or remove it"
        )
    try:
        correct = np.load(run_dir / TRIALS, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise HarnessError(
            f"{run_dir / TRIALS}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "the run's evidence is damaged: re-run it or restore the file"
        ) from None
    if correct.dtype != bool or correct.shape != shape:
        raise HarnessError(
            f"{run_dir / TRIALS}: {correct.dtype} {correct.shape}, not the record's {shape[0]} episodes × "
            f"{shape[1]} queries of booleans; the evidence is damaged or from another run"
        )
    if abs(float(correct.mean()) - accuracy) > 1e-9:
        raise HarnessError(
            f"{run_dir / RESULT}: accuracy {accuracy!r} disagrees with {TRIALS} "
            f"({float(correct.mean())!r}); one of them was changed: re-run it or restore both"
        )
    if (run_dir / TRAIN_LOG).is_file():
        with open(run_dir / TRAIN_LOG, newline="", encoding="utf-8") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                for key, value in row.items():
                    if value in ("", None):
                        continue
                    try:
                        float(value)
                    except (TypeError, ValueError):
                        raise HarnessError(
                            f"{run_dir / TRAIN_LOG}, line {line}: {key}={str(value)[:40]!r} is not a "
                            "number; the training log is damaged"
                        ) from None


def check_identity(record: dict, config: dict) -> None:
    """The record says what its ``config.yaml`` computed: the config hash recomputed from the stored tree (a
    trained run of a method registered here; an eval record's hash also covers its source run), the method,
    the benchmark, the seed its directory's name carries, and the steps the configuration caps (unless a time
    or FLOP budget set them); else one HarnessError naming both values."""
    from harness.settings import stored_hash

    run_dir = Path(record["run_dir"])
    where = f"{run_dir / RESULT} and {run_dir / CONFIG} disagree"
    fix = "one of them was edited or comes from another run; restore both from the run, or re-run it"
    for field, key in (("method", "method_name"), ("benchmark", "benchmark")):
        if record.get(field) != config.get(key):
            raise HarnessError(
                f"{where}: the record's {field} is {record.get(field)!r}, config.yaml's {config.get(key)!r}; {fix}"
            )
    from harness.methods import METHODS

    if record.get("kind", "train") == "train" and config.get("method_name") in METHODS:  # else: unknown here
        try:
            digest = stored_hash(config)
        except (HarnessError, KeyError, TypeError, AttributeError) as exc:
            raise HarnessError(
                f"{run_dir / CONFIG}: not a run configuration ({type(exc).__name__}: {exc}); {fix}"
            ) from None
        if digest != record.get("config_hash"):
            raise HarnessError(
                f"{where}: config.yaml hashes to {digest}, the record says {record.get('config_hash')}; {fix}"
            )
    named = re.search(r"-s(\d+)-([0-9a-f]{8})-[0-9a-f]{4}$", run_dir.name)
    if named and (int(named[1]), named[2]) != (record.get("seed"), str(record.get("config_hash"))[:8]):
        raise HarnessError(
            f"{where} with their directory's name: seed {record.get('seed')}, config {record.get('config_hash')} "
            f"in the record, seed {named[1]}, config {named[2]} in the name; {fix}"
        )
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    capped = train.get("steps")
    budgeted = train.get("budget_flops") or train.get("budget_minutes") or record.get("budget_exhausted")
    if record.get("kind", "train") == "train" and not budgeted and record.get("steps") != capped:
        raise HarnessError(
            f"{where}: the record says {record.get('steps')} training steps, config.yaml caps train.steps at "
            f"{capped}; {fix}"
        )


def read_losses(run_dir: Path) -> list[float]:
    """The training loss at every logged step (``train_log.csv``), in step order."""
    with open(Path(run_dir) / TRAIN_LOG, newline="", encoding="utf-8") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def newest_key(record: dict) -> tuple[str, str]:
    """Sort key, oldest first: finish time, then run id (ids start with the start time)."""
    return (str(record.get("finished") or ""), str(record.get("run_id") or Path(record["run_dir"]).name))


def run_key(record: dict) -> tuple[str | None, int | None]:
    """What identifies a run's computation: (config hash, seed)."""
    return record.get("config_hash"), record.get("seed")


class RunStore:
    """The records of one or more runs directories (read once; the first directory is where new
    runs go). A directory that does not exist holds no runs."""

    def __init__(self, *runs_dirs: Path):
        if not runs_dirs:
            raise ValueError("RunStore needs at least one runs directory")
        self.runs_dirs = [Path(d) for d in runs_dirs]
        self.runs_dir = self.runs_dirs[0]
        records: list[RunRecord] = []
        self.unreadable: list[Path] = []  # result.json files that are not a record
        self.indexes: dict[Path, StoreIndex] = {}  # each runs directory's index (store_index.py)
        self.signatures: dict[str, str] = {}  # run dir → the signature its record was read at
        for runs_dir in self.runs_dirs:
            if runs_dir.is_dir():
                index = self.indexes[runs_dir] = StoreIndex(runs_dir)
                for path in sorted(p for p in runs_dir.iterdir() if (p / RESULT).is_file()):
                    sign = signature(path)
                    cached = index.get(path, sign).get("record")
                    record = {**cached, "run_dir": str(path)} if cached else read_record(path)
                    if record and not cached:
                        index.put(path, sign, record={k: v for k, v in record.items() if k != "run_dir"})
                    self.signatures[str(path)] = sign
                    records.append(record) if record else self.unreadable.append(path / RESULT)
                index.save()
        self.records = sorted(records, key=newest_key)  # oldest first

    def __iter__(self):
        return iter(self.records)

    def cached(self, record: dict, fact: str):
        """What the index holds of ``fact`` for the run at the signature its record was read at (None: nothing)."""
        run_dir = Path(record["run_dir"])
        index = self.indexes.get(run_dir.parent)
        return index.get(run_dir, self.signatures.get(str(run_dir), "")).get(fact) if index else None

    def remember(self, record: dict, **facts) -> None:
        """Keep ``facts`` of the run in its directory's index (written by ``save_indexes``)."""
        run_dir = Path(record["run_dir"])
        if run_dir.parent in self.indexes and str(run_dir) in self.signatures:
            self.indexes[run_dir.parent].put(run_dir, self.signatures[str(run_dir)], **facts)

    def save_indexes(self) -> None:
        for index in self.indexes.values():
            index.save()

    def check_readable(self) -> RunStore:
        """Itself, or one HarnessError naming a record that cannot be read: every reader (reports, ``harness
        results``, ``load_runs``) names such a record rather than leaving its run out unseen."""
        if self.unreadable:
            more = f" (and {len(self.unreadable) - 1} more)" if len(self.unreadable) > 1 else ""
            raise HarnessError(
                f"{self.unreadable[0]}{more}: not a readable run record (truncated or edited); "
                "restore it from git or remove the run directory"
            )
        return self

    def describe(self) -> str:
        return ", ".join(str(d) for d in self.runs_dirs)

    def newest(self, records: list[dict]) -> tuple[dict[tuple, dict], list[dict]]:
        """The newest ok record per (method, config hash, seed) of ``records``, and the older
        ok duplicates (superseded), oldest first."""
        newest: dict[tuple, dict] = {}
        superseded = []
        for record in sorted((r for r in records if r.get("status") == "ok"), key=newest_key):
            key = (record.get("method"), *run_key(record))
            if key in newest:
                superseded.append(newest[key])
            newest[key] = record
        return newest, superseded

    def finished(self) -> dict[tuple, RunRecord]:
        """(config hash, seed) → the newest ok record."""
        newest, _ = self.newest(self.records)
        return {run_key(r): r for r in sorted(newest.values(), key=newest_key)}

    def newest_ok(self, config_hash: str, seed: int) -> RunRecord | None:
        """The run that counts for this configuration and seed, if one finished."""
        return self.finished().get((config_hash, seed))

    def latest(self, config_hash: str, seed: int) -> RunRecord | None:
        """The newest run of this configuration and seed whatever its status (to resume)."""
        matches = [r for r in self.records if run_key(r) == (config_hash, seed)]
        return max(matches, key=lambda r: (str(r.get("started") or ""), r["run_dir"])) if matches else None


@contextmanager
def claimed(runs_dir: Path, config_hash: str, seed: int) -> Iterator[RunRecord | None]:
    """Hold the runs directory's claim on one computation (config hash, seed) across sweeps: waits while
    another process holds it (an exclusive ``flock`` on ``<runs dir>/.claims/<hash>-s<seed>``), then yields
    the ok record that exists by then, if any, so that a computation is made once per runs directory."""
    with files.locked(Path(runs_dir) / ".claims" / f"{config_hash}-s{seed}"):
        yield RunStore(runs_dir).newest_ok(config_hash, seed)


def copy_evidence(record: dict, dest_runs_dir: Path) -> Path:
    """Copy a run's evidence (config, record, scores, training log; never the checkpoint) into
    ``dest_runs_dir/<run id>/``; returns that directory."""
    source = Path(record["run_dir"])
    dest = Path(dest_runs_dir) / source.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in EVIDENCE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    return dest


def records_frame(records: list[dict]):
    """Records as a pandas DataFrame with the columns people read first: accuracy and its 95% CI in
    percent, counts as integers (missing where a record has none), an empty reason where there is none."""
    import pandas as pd

    def percent(value):
        return None if value is None else 100 * value

    rows = []
    for r in records:
        rows.append(
            {
                "run": Path(r["run_dir"]).name,
                "method": r.get("method"),
                "benchmark": r.get("benchmark"),
                "seed": r.get("seed"),
                "head": r.get("head"),
                "status": r.get("status"),
                "accuracy %": percent(r.get("accuracy")),
                "ci95 %": percent(r.get("ci95")),
                "episodes": r.get("episodes"),
                "steps": r.get("steps"),
                "train_s": r.get("train_seconds"),
                "reason": r.get("reason") or "",
            }
        )
    columns = ["run", "method", "benchmark", "seed", "head", "status", "accuracy %", "ci95 %", "episodes", "steps"]
    frame = pd.DataFrame(rows, columns=[*columns, "train_s", "reason"])
    return frame.astype(
        {
            "seed": "Int64",
            "episodes": "Int64",
            "steps": "Int64",
            "accuracy %": "float64",
            "ci95 %": "float64",
            "train_s": "float64",
        }
    )


def default_runs_dir() -> Path:
    return Path(os.environ.get("HARNESS_RUNS", "runs"))


def score_text(record: dict) -> str:
    """A record's score in brief: test accuracy ± its 95% CI, or the validation accuracy of an
    ``eval.test=false`` run (which scores no test episodes)."""
    if record.get("accuracy") is None:
        return f"validation {100 * record['val_accuracy']:.2f}% (test not scored)"
    return f"{100 * record['accuracy']:.2f}% ± {100 * record['ci95']:.2f}"


def summary_line(record: dict) -> str:
    """A finished run in one line, then its mechanisms' medians and warnings where its method logs any."""
    if record.get("accuracy") is None:  # eval.test=false: validation only
        line = (
            f"{record['method']} on {record['benchmark']} (seed {record['seed']}): validation accuracy "
            f"{100 * record['val_accuracy']:.2f}% (test episodes not scored) | train {record['train_seconds']:.1f} s, "
            f"{record['steps']} steps | {record['run_dir']}"
        )
    else:
        acc, ci = 100 * record["accuracy"], 100 * record["ci95"]
        line = (
            f"{record['method']} on {record['benchmark']} (seed {record['seed']}): accuracy {acc:.2f}% ± {ci:.2f} "
            f"(error {100 - acc:.2f}%; 95% CI over {record['episodes']} episodes, head {record['head']}) | "
            f"train {record.get('train_seconds', 0):.1f} s, {record.get('steps', 0)} steps, eval {record['eval_seconds']:.1f} s | "
            f"{record['run_dir']}"
        )
    return "\n".join([line, *mechanisms.lines(record)])
