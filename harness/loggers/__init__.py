"""Where a run's curves and scores go: the loggers ``log.loggers`` names (``--logger``): TensorBoard by
default, Weights & Biases and MLflow where their extras are installed (``pip install -e '.[wandb,mlflow]'``).

Every logger gets the same scalars at the same steps: ``train/<term>`` for the loss and every term the
method logs, ``train/lr`` and ``train/steps_per_second`` (the rows of ``train_log.csv``), ``val/accuracy``
(periodic validation), and once the run is ``ok``: ``val/final_accuracy``, ``test/accuracy`` and
``test/ci95`` (fractions, as in ``result.json``) at the run's last step. Each also gets the resolved
configuration (TensorBoard: a text summary; W&B: the run's config; MLflow: ``group.key`` parameters and the
artifact ``config.yaml``), and names the run by its directory.

Resuming: ``<run dir>/loggers.json`` keeps the W&B and MLflow run ids (and where those runs live), so that a
resumed run continues the same W&B and MLflow runs. TensorBoard purges its events past the checkpoint and
the resumed run writes those steps again; W&B and MLflow cannot take back what they were sent, so they keep
the values a crashed attempt sent past the checkpoint (up to ``sent_step``) and get only later steps from
the resumed one: no step is logged twice. A failed run's loggers are closed as failed (W&B exit code 1,
MLflow ``FAILED``, or ``KILLED`` when interrupted).

Nothing here draws random numbers, so results are unchanged, and nothing here is evidence
(``harness.store.EVIDENCE_FILES``). wandb and mlflow are imported only by a run that logs to them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from harness import files
from harness.config import LogConfig
from harness.errors import ConfigError, HarnessError, UnknownNameError
from harness.registry import Entry, Registry

STATE = "loggers.json"  # in each run directory: the W&B and MLflow runs a resumed run continues
UNPLOTTED = ("step", "seconds")  # train_log.csv columns that are x axes, not curves
TAGS = {"lr": "train/lr", "val_accuracy": "val/accuracy"}  # other columns: train/<column>


@dataclass(frozen=True)
class LoggerEntry(Entry):
    """A logger class (``target``), the package it needs and the harness extra that installs it."""

    package: str = ""
    extra: str = ""


LOGGERS: Registry[LoggerEntry] = Registry("logger")
LOGGERS.add(
    "tensorboard",
    LoggerEntry(
        "tensorboard",
        "harness.loggers.tensorboard:TensorBoard",
        "event files in <run dir>/tb/ (tensorboard --logdir runs)",
        package="tensorboard",
    ),
)
LOGGERS.add(
    "wandb",
    LoggerEntry(
        "wandb",
        "harness.loggers.wandb:WandB",
        "Weights & Biases: offline files in <run dir>/wandb/ (wandb sync), or online",
        package="wandb",
        extra="wandb",
    ),
)
LOGGERS.add(
    "mlflow",
    LoggerEntry(
        "mlflow",
        "harness.loggers.mlflow:MLflow",
        "MLflow: a file store in <runs dir>/mlruns, or log.mlflow_uri",
        package="mlflow",
        extra="mlflow",
    ),
)

# Run directory → its training loggers, open until ``finish`` adds the final numbers to the same runs.
_OPEN: dict[Path, TrainLoggers] = {}


def check(names, source: str = "log.loggers") -> None:
    """Every logger of ``names`` is known and its package installed, or one error saying how to fix it
    (``resolve`` calls this, so the error comes before any run directory is made)."""
    for name in names:
        try:
            entry = LOGGERS.get(name)
        except UnknownNameError as exc:
            exc.args = (f"{source}: {exc}",)
            raise
        if find_spec(entry.package) is None:
            install = f"pip install -e '.[{entry.extra}]'" if entry.extra else "make install"
            raise HarnessError(
                f"{source} names {name}, and the {entry.package} package it needs is not installed: "
                f"install it with `{install}` in the harness's folder, or log without {name}"
            )


def preflight(log: LogConfig, run_dir: Path) -> None:
    """What a logger needs from this machine, checked before ``run_dir`` exists: MLflow's store (a file store
    is a folder: no file may stand where it goes) and a W&B login for online mode."""
    from urllib.parse import unquote, urlparse

    if "mlflow" in log.loggers:
        uri = mlflow_tracking_uri(run_dir, log)
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            store = Path(unquote(parsed.path) if parsed.scheme else uri)
            blocking = next((p for p in [store, *store.parents] if p.exists() and not p.is_dir()), None)
            if blocking is not None:
                raise ConfigError(
                    f"MLflow's tracking store {uri} is a file store, which is a folder, and {blocking} is a file: "
                    "point log.mlflow_uri at a folder (or a tracking server), or pass another --runs-dir"
                )
    if "wandb" in log.loggers and log.wandb_mode == "online" and not wandb_login():
        raise ConfigError(
            "log.wandb_mode=online needs a W&B login on this machine, and there is none (no WANDB_API_KEY, no "
            "`wandb login`): log in, or log offline with --set log.wandb_mode=offline and `wandb sync` later"
        )


def mlflow_tracking_uri(run_dir: Path, log: LogConfig) -> str:
    """``log.mlflow_uri``, else a file store in the run directory's parent (the runs directory)."""
    return log.mlflow_uri or (Path(run_dir).absolute().parent / "mlruns").as_uri()


def wandb_login() -> bool:
    """Whether W&B has a key here: WANDB_API_KEY, or the netrc entry `wandb login` writes for its host."""
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def add_logger_option(parser) -> None:
    """``--logger NAMES`` on a command that starts runs (``logger_setting`` reads it)."""
    parser.add_argument(
        "--logger",
        metavar="NAMES",
        help=f"where curves and scores go, comma-separated: {', '.join(LOGGERS.names())} "
        "(sets log.loggers; default tensorboard)",
    )


def logger_setting(value: str | None) -> dict:
    """``--logger a,b`` as the setting ``{"log.loggers": ["a", "b"]}``, checked (``{}`` when not given)."""
    if value is None:
        return {}
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise ConfigError(
            f"--logger needs one or more of {', '.join(LOGGERS.names())}, comma-separated; "
            "to write only train_log.csv, use --set 'log.loggers=[]'"
        )
    check(names, "--logger")
    return {"log.loggers": names}


class RunState:
    """``<run dir>/loggers.json``: per logger, what a resumed run needs to continue its run there."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STATE
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise HarnessError(
                f"{self.path} is damaged ({type(exc).__name__}); it names the W&B and MLflow runs "
                "this run continues: restore it, or remove it to start new ones"
            ) from None

    def get(self, name: str) -> dict:
        return dict(self.data.get(name) or {})

    def update(self, name: str, **values) -> None:
        self.data[name] = {**self.data.get(name, {}), **values}
        files.write_json(self.path, self.data)


def run_identity(run_dir: Path) -> dict:
    """The running record's method, benchmark, seed and config hash (tags for W&B and MLflow)."""
    from harness.store import read_record

    record = read_record(run_dir) or {}
    return {key: record.get(key) for key in ("method", "benchmark", "seed", "config_hash")}


class TrainLoggers:
    """The run's loggers, opened in the order ``log.loggers`` names them. ``step`` and ``seconds``: where
    training starts (a checkpoint's, when resuming); ``step=None``: a method that does not train."""

    def __init__(self, run_dir: Path, log: LogConfig, step: int | None = None, seconds: float = 0.0):
        run_dir = Path(run_dir)
        stale = _OPEN.pop(run_dir, None)  # an earlier attempt of this run in this process, left open
        if stale is not None:
            stale.close({"status": "failed"})
        self.sinks: list = []
        state = RunState(run_dir)
        try:
            for name in dict.fromkeys(log.loggers):
                self.sinks.append(LOGGERS.get(name).load()(run_dir, log, state, step))
        except BaseException:
            self.close({"status": "failed"})
            raise
        self.last_step, self.last_seconds = step or 0, seconds
        if step is not None:
            _OPEN[run_dir] = self

    def write(self, row: dict) -> None:
        """One ``train_log.csv`` row: ``step``, ``seconds``, ``lr``, the method's terms, maybe ``val_accuracy``."""
        step, seconds = int(row["step"]), float(row["seconds"])
        values = {
            TAGS.get(key, f"train/{key}"): float(value)
            for key, value in row.items()
            if key not in UNPLOTTED and value is not None
        }
        if seconds > self.last_seconds:
            values["train/steps_per_second"] = (step - self.last_step) / (seconds - self.last_seconds)
        self.last_step, self.last_seconds = step, seconds
        for sink in self.sinks:
            sink.scalars(values, step)

    def close(self, record: dict) -> None:
        """Close every logger, as failed unless ``record`` is ok. Closing a failed run's loggers never
        raises (the run's own error is what counts): a logger that cannot close is a warning."""
        ok = record.get("status") == "ok"
        for sink in self.sinks:
            try:
                sink.close(record)
            except Exception as exc:
                if ok:
                    raise
                print(f"harness: warning: {type(sink).__name__} did not close cleanly: {exc}", file=sys.stderr)
        self.sinks = []


def finish(run_dir: Path, log: LogConfig, record: dict) -> None:
    """A run's end. An ok run: its final numbers at its last step (``record["steps"]``; 0 without training)
    in its training loggers or, for a method that does not train, new ones; then they are closed. A failed
    run: its open loggers are closed as failed (none is opened)."""
    run_dir = Path(run_dir)
    loggers = _OPEN.pop(run_dir, None)
    if record.get("status") != "ok":
        if loggers is not None:
            loggers.close(record)
        return
    loggers = loggers or TrainLoggers(run_dir, log)
    finals = {
        "val/final_accuracy": record.get("val_accuracy"),
        "test/accuracy": record.get("accuracy"),
        "test/ci95": record.get("ci95"),
    }
    try:
        values = {tag: float(value) for tag, value in finals.items() if value is not None}
        for sink in loggers.sinks:
            sink.finals(values, int(record.get("steps") or 0))
    finally:
        loggers.close(record)
