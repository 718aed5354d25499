"""TensorBoard event files for every run, in ``<run dir>/tb/``, so that ``tensorboard --logdir runs``
(or a sweep's folder) shows a whole sweep side by side; each run is named by its directory (start
time, method, benchmark, seed, config hash).

Scalars: ``train/<term>`` for the loss and every term the method logs, ``train/lr`` and
``train/steps_per_second`` (the rows of ``train_log.csv``), ``val/accuracy`` (periodic validation),
and once the run is ``ok``: ``val/final_accuracy``, ``test/accuracy`` and ``test/ci95`` (fractions,
as in ``result.json``) at the run's last step. The resolved configuration is a text summary.

A resumed run continues its curves: its writer purges every event past the checkpoint
(``purge_step``), which TensorBoard's readers honour, before training writes those steps again.
Nothing here draws random numbers, so training results are unchanged. ``tb/`` is not evidence
(``harness.store.EVIDENCE_FILES``): it stays with the run, never in ``results/``.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import yaml

from harness.errors import HarnessError

TB_DIR = "tb"
EVENTS_GLOB = "events.out.tfevents.*"
UNPLOTTED = ("step", "seconds")  # train_log.csv columns that are x axes, not curves
TAGS = {"lr": "train/lr", "val_accuracy": "val/accuracy"}  # other columns: train/<column>

# Run directory → its training writer, kept open until ``write_result`` adds the final numbers to the
# same event file (a later file could sort before a resumed run's purge and lose them).
_OPEN: dict[Path, TrainBoard] = {}


def open_writer(run_dir: Path, purge_step: int | None = None):
    """A ``SummaryWriter`` on ``run_dir/tb`` whose event file sorts after the ones already there
    (readers replay files in name order, which starts with the creation second)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise HarnessError(f"TensorBoard logging needs the tensorboard package, a dependency of the harness ({exc}); "
                           "install it with `pip install 'tensorboard>=2.14'` or `make install`") from None
    log_dir = Path(run_dir) / TB_DIR
    newest = max((int(p.name.split(".")[3]) for p in log_dir.glob(EVENTS_GLOB)), default=None)
    if newest is not None and time.time() < newest + 1:
        time.sleep(newest + 1 - time.time())
    writer = SummaryWriter(str(log_dir), purge_step=purge_step)
    if newest is None:
        writer.add_text("config", config_markdown(run_dir), 0)
    return writer


def config_markdown(run_dir: Path) -> str:
    """The run's ``config.yaml`` as a Markdown code block (TensorBoard's text tab renders Markdown)."""
    from harness.store import read_config

    return "\n".join("    " + line for line in yaml.safe_dump(read_config(run_dir), sort_keys=False).splitlines())


class TrainBoard:
    """A training run's writer: one scalar per logged ``train_log.csv`` value, flushed per row so that
    a crash keeps every row written so far. Resuming from ``step`` purges the events after it."""

    def __init__(self, run_dir: Path, step: int, seconds: float):
        run_dir = Path(run_dir)
        stale = _OPEN.pop(run_dir, None)  # an earlier attempt of this run that failed in this process
        if stale is not None:
            stale.close()
        resumed = any((run_dir / TB_DIR).glob(EVENTS_GLOB))
        self.writer = open_writer(run_dir, purge_step=step + 1 if resumed else None)
        self.close = weakref.finalize(self, self.writer.close)  # also at exit, if a run failed
        self.last_step, self.last_seconds = step, seconds
        _OPEN[run_dir] = self

    def write(self, row: dict) -> None:
        """One ``train_log.csv`` row: ``step``, ``seconds``, ``lr``, the method's terms, maybe ``val_accuracy``."""
        step, seconds = int(row["step"]), float(row["seconds"])
        for key, value in row.items():
            if key not in UNPLOTTED and value is not None:
                self.writer.add_scalar(TAGS.get(key, f"train/{key}"), float(value), step)
        if seconds > self.last_seconds:
            self.writer.add_scalar("train/steps_per_second", (step - self.last_step) / (seconds - self.last_seconds), step)
        self.last_step, self.last_seconds = step, seconds
        self.writer.flush()


def write_result(run_dir: Path, record: dict) -> None:
    """The finished run's final numbers at its last step (``record["steps"]``; 0 without training),
    in its training writer's file (then closed) or, for methods that do not train, a new one."""
    run_dir = Path(run_dir)
    board = _OPEN.pop(run_dir, None)
    writer = board.writer if board else open_writer(run_dir)
    finals = {"val/final_accuracy": record.get("val_accuracy"), "test/accuracy": record.get("accuracy"),
              "test/ci95": record.get("ci95")}
    try:
        for tag, value in finals.items():
            if value is not None:
                writer.add_scalar(tag, float(value), int(record.get("steps") or 0))
    finally:
        board.close() if board else writer.close()
