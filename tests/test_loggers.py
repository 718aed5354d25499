"""The loggers of ``log.loggers``: TensorBoard, W&B (offline) and MLflow (a file store) get
the same scalars, read back from what each wrote on disk; a resumed run continues the same W&B and MLflow
runs without a step twice; the choice reaches sweeps and tune, changes no config hash, and a missing
package or an unknown name is one error before any run directory exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_tboard import TINY, csv_rows, scalars

from harness.loggers import STATE
from harness.resolve import resolve
from harness.runner import RunRequest, execute
from harness.settings import config_hash
from harness.store import RunStore, read_config, read_record

from conftest import interrupt_at_step, run_cli

ALL = "tensorboard,wandb,mlflow"
BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path, monkeypatch):
    """No network, no prompt, nothing outside tmp_path: W&B offline and silent."""
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": tmp_path / "wandb-dir",
        "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
        "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
        "WANDB_DATA_DIR": tmp_path / "wandb-data",
        "WANDB_INIT_TIMEOUT": "60",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


# ------------------------------------------------------------------------------------------ readers


def wandb_records(path: Path):
    """The protobuf records of one ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    chunks of [crc32, length (2 bytes, little-endian), type (1 full, 2 first, 3 middle, 4 last)], none
    crossing a block; a record too short for a block's end is padded with zeros."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    position, parts = 7, []
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:
            position += left
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        parts.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def wandb_attempts(run_dir: Path) -> list[list]:
    """The records of each offline W&B folder of the run (one per attempt), in the order they were started."""
    attempts = [list(wandb_records(path)) for path in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    return sorted(
        attempts,
        key=lambda records: next(
            r.run.start_time.ToNanoseconds() for r in records if r.WhichOneof("record_type") == "run"
        ),
    )


def wandb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series the run sent to W&B over all its attempts: (step, value) pairs."""
    series: dict[str, list] = {}
    for records in wandb_attempts(run_dir):
        for record in (r for r in records if r.WhichOneof("record_type") == "history"):
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    series.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
    return series


def wandb_of(records: list, kind: str):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def mlflow_run(run_dir: Path):
    """(client, run) of the MLflow run ``loggers.json`` names, from its file store."""
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / STATE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    return client, client.get_run(state["run_id"])


def mlflow_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    client, run = mlflow_run(run_dir)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def assert_same_series(expected: dict, got: dict, where: str) -> None:
    assert set(got) == set(expected), where
    for tag, points in expected.items():
        assert [step for step, _ in got[tag]] == [step for step, _ in points], f"{where} {tag}"
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), f"{where} {tag}"


def the_run(runs_dir: Path) -> Path:
    records = list(RunStore(runs_dir))
    assert len(records) == 1, records
    return Path(records[0]["run_dir"])


# ------------------------------------------------------------------------------------------ tests


def test_tensorboard_wandb_and_mlflow_get_the_same_scalars_and_the_configuration(runs_dir):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=3",
            "--set",
            "train.val_every=2",
            *(a for s in TINY for a in ("--set", s)),
            "--runs-dir",
            runs_dir,
            "--no-progress",
            "--logger",
            ALL,
        )
        == 0
    )
    run_dir = the_run(runs_dir)
    board, record = scalars(run_dir), read_record(run_dir)
    assert {"train/loss", "train/lr", "train/steps_per_second", "val/accuracy", "test/accuracy"} <= set(board)
    assert board["test/accuracy"] == [(3, pytest.approx(record["accuracy"], rel=1e-6))]
    assert_same_series(board, wandb_scalars(run_dir), "W&B")
    assert_same_series(board, mlflow_scalars(run_dir), "MLflow")

    (attempt,) = wandb_attempts(run_dir)
    (run,) = wandb_of(attempt, "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert run.display_name == run_dir.name and run.run_group == record["config_hash"]
    assert config["train"] == read_config(run_dir)["train"] and config["harness"]["seed"] == 0
    assert [exit.exit_code for exit in wandb_of(attempt, "exit")] == [0]

    client, mlflow = mlflow_run(run_dir)
    assert Path(mlflow.info.artifact_uri.removeprefix("file://")).parent.parent.parent == runs_dir / "mlruns"
    assert mlflow.info.status == "FINISHED" and mlflow.info.run_name == run_dir.name
    assert mlflow.data.params["train.steps"] == "3" and mlflow.data.params["method_name"] == "protonet"
    assert mlflow.data.tags["config_hash"] == record["config_hash"]
    assert "log" not in read_config(run_dir)  # where curves go is no part of the stored configuration


def test_a_method_without_training_logs_its_score_everywhere(runs_dir):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=20",
            "--runs-dir",
            runs_dir,
            "--no-progress",
            "--logger",
            "wandb,mlflow",
        )
        == 0
    )
    run_dir = the_run(runs_dir)
    expected = {
        "test/accuracy": [(0, read_record(run_dir)["accuracy"])],
        "test/ci95": [(0, read_record(run_dir)["ci95"])],
    }
    assert_same_series(expected, wandb_scalars(run_dir), "W&B")
    assert_same_series(expected, mlflow_scalars(run_dir), "MLflow")
    assert not (run_dir / "tb").exists()  # not asked for


def test_a_resumed_run_continues_its_wandb_and_mlflow_runs_without_a_step_twice(tmp_path, monkeypatch):
    """Crash at the 4th step with a checkpoint at step 2 (steps 1-3 logged), then resume: W&B and MLflow
    keep steps 1-3 from the first attempt and get 4-5 from the second, in the same runs. Resumed training is
    deterministic, so all three loggers show the curves of train_log.csv; only the clock differs: W&B and
    MLflow keep the first attempt's steps per second at step 3, where TensorBoard has the second's."""
    resolved = resolve(
        "protonet",
        "synthetic-5w1s",
        sets=[
            *TINY,
            "train.steps=5",
            "train.checkpoint_every=2",
            "train.val_every=2",
            f"log.loggers=[{ALL}]",
            f"log.mlflow_uri={(tmp_path / 'mlruns').as_uri()}",
        ],
    )
    run_dir = tmp_path / "run"
    restore = interrupt_at_step(monkeypatch, resolved.method_class, 3)
    with pytest.raises(KeyboardInterrupt):
        execute(RunRequest(resolved, seed=0, run_dir=run_dir, progress=False))
    first = json.loads((run_dir / STATE).read_text())
    assert first["wandb"]["sent_step"] == first["mlflow"]["sent_step"] == 3
    assert mlflow_run(run_dir)[1].info.status == "KILLED"
    assert [e.exit_code for e in wandb_of(wandb_attempts(run_dir)[0], "exit")] == [1]
    first_speed = wandb_scalars(run_dir)["train/steps_per_second"]
    restore()
    execute(RunRequest(resolved, seed=0, run_dir=run_dir, resume=True, progress=False))

    board = scalars(run_dir)
    assert [step for step, _ in board["train/loss"]] == [1, 2, 3, 4, 5]
    assert [v for _, v in board["train/loss"]] == pytest.approx([float(r["loss"]) for r in csv_rows(run_dir)], rel=1e-6)
    speed = board.pop("train/steps_per_second")
    for where, series in ("W&B", wandb_scalars(run_dir)), ("MLflow", mlflow_scalars(run_dir)):
        assert_same_series({"speed": first_speed + speed[3:]}, {"speed": series.pop("train/steps_per_second")}, where)
        assert_same_series(board, series, where)
    attempts = wandb_attempts(run_dir)
    assert [[h.step.num for h in wandb_of(a, "history")] for a in attempts] == [[1, 2, 3], [4, 5]]
    assert {run.run_id for a in attempts for run in wandb_of(a, "run")} == {first["wandb"]["id"]}
    client, mlflow = mlflow_run(run_dir)
    assert mlflow.info.run_id == first["mlflow"]["run_id"] and mlflow.info.status == "FINISHED"
    assert len(client.search_runs([mlflow.info.experiment_id])) == 1


def test_logging_settings_change_no_config_hash_and_are_never_stored():
    plain = resolve("protonet", "synthetic-5w1s").config
    logged = resolve(
        "protonet",
        "synthetic-5w1s",
        sets=[
            "log.loggers=[wandb,mlflow]",
            "log.wandb_mode=online",
            "log.wandb_project=x",
            "log.mlflow_uri=file:/tmp/y",
        ],
    ).config
    assert logged.log.loggers == ("wandb", "mlflow") and plain.log.loggers == ("tensorboard",)
    assert config_hash(logged) == config_hash(plain) and logged.to_dict() == plain.to_dict()


def test_unknown_loggers_get_the_closest_name_and_a_missing_package_the_install_command(runs_dir, monkeypatch, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--logger",
            "tensorboard,wandbb",
            "--runs-dir",
            runs_dir,
        )
        == 2
    )
    assert "--logger: unknown logger 'wandbb'" in capsys.readouterr().err
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "log.loggers=[mlfow]",
            "--runs-dir",
            runs_dir,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "log.loggers: unknown logger 'mlfow'" in err and "Did you mean 'mlflow'?" in err
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "log.wandb_mode=onlin",
            "--runs-dir",
            runs_dir,
        )
        == 2
    )
    assert "log.wandb_mode must be one of 'offline', 'online'" in capsys.readouterr().err
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "log.loggers=wandb",
            "--runs-dir",
            runs_dir,
        )
        == 2
    )
    assert "log.loggers must be a list of str in brackets, e.g. [a, b], got 'wandb'" in capsys.readouterr().err

    import harness.loggers

    real = harness.loggers.find_spec
    monkeypatch.setattr(harness.loggers, "find_spec", lambda name: None if name == "wandb" else real(name))
    assert (
        run_cli("run", "--method", "pixels", "--bench", "synthetic-5w1s", "--logger", "wandb", "--runs-dir", runs_dir)
        == 2
    )
    assert "pip install -e '.[wandb]'" in capsys.readouterr().err
    assert (
        run_cli(
            "sweep",
            "--methods",
            "pixels",
            "--benches",
            "synthetic-5w1s",
            "--executor",
            "local",
            "--set",
            "log.loggers=[wandb]",
            "--runs-dir",
            runs_dir,
            "--dry-run",
        )
        == 2
    )
    assert "pip install -e '.[wandb]'" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_the_logger_choice_reaches_sweep_tasks_and_tune_trials(runs_dir, tmp_path, monkeypatch):
    import harness.runner
    import harness.sweep.commands
    from harness.sweep.task import execute_run

    planned, seen = [], []
    monkeypatch.setattr(harness.sweep.commands, "launch_runs", lambda sweep, runs, *rest: planned.extend(runs))
    assert (
        run_cli(
            "sweep",
            "--methods",
            "protonet",
            "--benches",
            "synthetic-5w1s",
            "--seeds",
            "0-1",
            "--executor",
            "local",
            "--logger",
            "mlflow",
            "--runs-dir",
            runs_dir,
        )
        == 0
    )
    assert [run.overrides for run in planned] == [{"log.loggers": ["mlflow"]}] * 2
    record = {
        "run_id": "x",
        "method": "protonet",
        "benchmark": "synthetic-5w1s",
        "seed": 0,
        "val_accuracy": 0.5,
        "steps": 1,
        "train_seconds": 0.1,
        "run_dir": "x",
    }
    monkeypatch.setattr(harness.runner, "execute", lambda request: seen.append(request.resolved.config.log) or record)
    planned[0].run_dir = str(tmp_path / "task")
    execute_run(planned[0], "cpu")  # what a SLURM or local task runs (it checks the planned config hash)
    assert seen[-1].loggers == ("mlflow",)

    import harness.sweep.submit

    trials = []

    def submitted(sweep, runs, *rest):  # tune's trials go to sweep workers: look at what it submits
        trials.extend(runs)
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.sweep.submit, "launch_runs", submitted)
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: [0.001, 0.01]\n")
    assert (
        run_cli(
            "tune",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--space",
            space,
            "--trials",
            "2",
            "--budget-minutes",
            "1",
            "--runs-dir",
            runs_dir,
            "--out",
            tmp_path / "tuned",
            "--logger",
            "wandb",
        )
        == 130
    )
    assert [run.overrides["log.loggers"] for run in trials] == [["wandb"]] * 2

    assert len({run.config_hash for run in trials}) == 2 and all(len(run.config_hash) == 12 for run in trials)


def test_commands_and_import_harness_load_no_logger_library():
    code = (
        "import sys, contextlib, io, harness; light = {'torch', 'pandas', 'wandb', 'mlflow'} & set(sys.modules); "
        "from harness.cli import build_parser, main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['list'])\n"
        "for command in ('run', 'sweep', 'tune'):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): "
        "build_parser().parse_args([command, '--help'])\n"
        "print(sorted(light), sorted({'wandb', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


@pytest.mark.parametrize("case", ["mlflow uri is a file", "default mlflow store is a file", "wandb online, no key"])
def test_a_logger_that_cannot_start_is_refused_before_the_run_directory_exists(case, tmp_path, monkeypatch, capsys):
    from conftest import one_error

    runs = tmp_path / "runs"
    base = ["run", "--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=4", "--runs-dir", runs]
    if case == "mlflow uri is a file":
        (tmp_path / "a-file").write_text("not a store", encoding="utf-8")
        args = [*base, "--logger", "mlflow", "--set", f"log.mlflow_uri={(tmp_path / 'a-file').as_uri()}"]
    elif case == "default mlflow store is a file":
        runs.mkdir()
        (runs / "mlruns").write_text("not a store", encoding="utf-8")
        args = [*base, "--logger", "mlflow"]
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        (tmp_path / "netrc").write_text("", encoding="utf-8")
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
        args = [*base, "--logger", "wandb", "--set", "log.wandb_mode=online"]
    assert run_cli(*args) == 2
    err = one_error(capsys)
    assert ("is a file" in err) if "mlflow" in case else ("wandb login" in err and "offline" in err)
    assert not any(p.name != "mlruns" for p in (runs.iterdir() if runs.is_dir() else []))  # no run directory
