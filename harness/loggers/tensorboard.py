"""TensorBoard event files for every run, in ``<run dir>/tb/``, so that ``tensorboard --logdir runs``
(or a sweep's folder) shows a whole sweep side by side; each run is named by its directory (start
time, method, benchmark, seed, config hash). The resolved configuration is a text summary.

A resumed run continues its curves: its writer purges every event past the checkpoint (``purge_step``),
which TensorBoard's readers honour, before training writes those steps again. ``tb/`` stays with the
run, never in ``results/``.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import yaml

from harness.config import LogConfig
from harness.errors import HarnessError

TB_DIR = "tb"
EVENTS_GLOB = "events.out.tfevents.*"


def open_writer(run_dir: Path, purge_step: int | None = None):
    """A ``SummaryWriter`` on ``run_dir/tb`` whose event file sorts after the ones already there
    (readers replay files in name order, which starts with the creation second)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise HarnessError(
            f"TensorBoard logging needs the tensorboard package, a dependency of the harness ({exc}); "
            "install it with `pip install 'tensorboard>=2.14'` or `make install`"
        ) from None
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


class TensorBoard:
    """The run's writer, flushed per row so that a crash keeps every row written so far. Training that
    starts at ``step`` in a run with events already (a resume) purges the events after ``step``."""

    def __init__(self, run_dir: Path, log: LogConfig, state, step: int | None):
        resumed = step is not None and any((Path(run_dir) / TB_DIR).glob(EVENTS_GLOB))
        self.writer = open_writer(run_dir, purge_step=step + 1 if resumed else None)
        self._close = weakref.finalize(self, self.writer.close)  # also at exit, if a run failed

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    finals = scalars

    def close(self, record: dict) -> None:
        self._close()
