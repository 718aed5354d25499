"""Weights & Biases (``log.loggers: [wandb]``; ``pip install -e '.[wandb]'``): one W&B run per harness run,
named by its run directory, grouped by config hash (its seeds side by side), tagged with method and
benchmark, with the resolved configuration as its config.

``log.wandb_mode=offline`` (the default) needs no network: W&B writes ``<run dir>/wandb/offline-run-*/``,
which ``wandb sync <run dir>/wandb/offline-run-*`` uploads later. ``online`` streams to the server of your
``wandb login`` (project ``log.wandb_project``, entity ``log.wandb_entity``). A resumed run continues the same
W&B run id (``loggers.json``); offline, each attempt writes its own folder under that id.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from harness.config import LogConfig
from harness.errors import HarnessError


class WandB:
    """The harness run's W&B run; steps up to ``sent_step`` (sent by an earlier attempt) are not sent again."""

    def __init__(self, run_dir: Path, log: LogConfig, state, step: int | None):
        import wandb

        from harness.loggers import run_identity
        from harness.store import read_config

        run_dir, saved = Path(run_dir), state.get("wandb")
        identity = run_identity(run_dir)
        run_id = saved.get("id") or secrets.token_hex(4)
        project, entity = saved.get("project", log.wandb_project), saved.get("entity", log.wandb_entity)
        try:
            self.run = wandb.init(
                project=project,
                entity=entity or None,
                id=run_id,
                resume="allow",
                name=run_dir.name,
                group=identity["config_hash"],
                tags=[str(identity["method"]), str(identity["benchmark"])],
                config={**read_config(run_dir), "harness": identity},
                dir=str(run_dir),
                mode=log.wandb_mode,
                reinit="create_new",
                settings=wandb.Settings(console="off", disable_git=True, save_code=False),
            )  # the record has git
        except Exception as exc:
            raise HarnessError(
                f"W&B could not start the run ({type(exc).__name__}: {exc}); for log.wandb_mode=online "
                "log in first (`wandb login`, or set WANDB_API_KEY) on a machine that reaches the "
                "server, or log offline with --set log.wandb_mode=offline"
            ) from None
        self.state, self.sent = state, int(saved.get("sent_step", -1))
        state.update("wandb", id=run_id, project=project, entity=entity, mode=log.wandb_mode, sent_step=self.sent)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if step <= self.sent:
            return
        self.run.log(values, step=step)
        self.sent = step
        self.state.update("wandb", sent_step=step)

    def finals(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)
        self.run.summary.update(values)

    def close(self, record: dict) -> None:
        self.run.finish(exit_code=0 if record.get("status") == "ok" else 1)
