"""MLflow (``log.loggers: [mlflow]``; ``pip install -e '.[mlflow]'``, which installs mlflow-skinny): one MLflow
run per harness run in the experiment ``log.mlflow_experiment``, named by its run directory and tagged with
method, benchmark, seed and config hash; the resolved configuration as ``group.key`` parameters and as the
artifact ``config.yaml``.

``log.mlflow_uri`` is the tracking URI; by default a file store beside the run directory,
``<runs dir>/mlruns`` (``mlflow ui --backend-store-uri runs/mlruns``). MLflow 3 keeps file stores in
maintenance mode and refuses them unless ``MLFLOW_ALLOW_FILE_STORE`` is set: for a ``file:`` URI the harness
sets it (where it is unset). A resumed run continues the same MLflow run (``loggers.json``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from harness.config import LogConfig
from harness.errors import HarnessError

MAX_PARAMS = 100  # per log_batch call (MLflow's limit)
INTERRUPTED = ("interrupted", "terminated (SIGTERM)")  # record reasons of a run stopped from outside


class MLflow:
    """The harness run's MLflow run; steps up to ``sent_step`` (sent by an earlier attempt) are not sent again."""

    def __init__(self, run_dir: Path, log: LogConfig, state, step: int | None):
        from harness.loggers import mlflow_tracking_uri, run_identity
        from harness.settings import flatten
        from harness.store import read_config

        run_dir, saved = Path(run_dir), state.get("mlflow")
        uri = saved.get("tracking_uri") or mlflow_tracking_uri(run_dir, log)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=uri)
            if saved.get("run_id"):
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                tree = read_config(run_dir)
                tags = {key: str(value) for key, value in run_identity(run_dir).items()}
                run = self.client.create_run(
                    self.experiment(log.mlflow_experiment),
                    run_name=run_dir.name,
                    tags={**tags, "run_dir": str(run_dir.absolute())},
                )
                self.run_id = run.info.run_id
                params = [Param(key, str(value)) for key, value in flatten(tree).items()]
                for start in range(0, len(params), MAX_PARAMS):
                    self.client.log_batch(self.run_id, params=params[start : start + MAX_PARAMS])
                self.client.log_text(self.run_id, yaml.safe_dump(tree, sort_keys=False), "config.yaml")
        except MlflowException as exc:
            raise HarnessError(
                f"MLflow could not start the run at {uri} ({exc.message}); check log.mlflow_uri "
                f"(default: a file store beside the run directory)"
            ) from None
        self.state, self.sent = state, int(saved.get("sent_step", -1))
        state.update("mlflow", tracking_uri=uri, run_id=self.run_id, sent_step=self.sent)

    def experiment(self, name: str) -> str:
        """The experiment's id, made if it does not exist (by whichever of several processes comes first)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException:
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        return found.experiment_id

    def send(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def scalars(self, values: dict[str, float], step: int) -> None:
        if step <= self.sent:
            return
        self.send(values, step)
        self.sent = step
        self.state.update("mlflow", sent_step=step)

    def finals(self, values: dict[str, float], step: int) -> None:
        self.send(values, step)

    def close(self, record: dict) -> None:
        ok, stopped = record.get("status") == "ok", record.get("reason") in INTERRUPTED
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED" if stopped else "FAILED")
