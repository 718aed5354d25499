"""Sweeps without SLURM: grid parsing, planning and its refusals, profiles, skip-finished, and a
real sweep through submitit's local executor with `harness status`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness import config
from harness.errors import ConfigError
from harness.overrides import Grid
from harness.store import RunStore
from harness.sweep import profiles
from harness.sweep.grid import SweepSpec
from harness.sweep.plan import Run, Sweep, assign_run_dirs, plan_runs
from harness.sweep.task import execute_run

from conftest import one_error, run_cli

PIXELS = ("--methods", "pixels", "--benches", "synthetic-5w1s", "--set", "bench.episodes=100")


@pytest.fixture
def no_slurm(monkeypatch):
    """Here no SLURM controller answers (even where the test cluster runs)."""
    monkeypatch.setattr(profiles, "slurm_answers", lambda: (False, "Unable to contact slurm controller"))


def test_without_sinfo_there_is_no_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert profiles.slurm_answers() == (False, "sinfo is not installed")
    assert profiles.choose_executor(None, None) == "local"


@pytest.mark.parametrize(
    "text, seeds",
    [
        ("0-4", [0, 1, 2, 3, 4]),
        ("0,2,5", [0, 2, 5]),
        ("0-2,7", [0, 1, 2, 7]),
        ("3,3,1-3", [3, 1, 2]),
        (2, [2]),
        ([0, "4-5"], [0, 4, 5]),
    ],
)
def test_seed_ranges(text, seeds):
    assert config.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["4-2", "a", "-1", "1.5", ""])
def test_bad_seeds_say_what_is_valid(text):
    with pytest.raises(ConfigError, match="use e.g. 0-4, 0,2,5 or 0-2,7"):
        config.parse_seeds(text)


def test_set_values_split_at_top_level_commas_only():
    grid = Grid.from_text(["train.lr=0.1,1e-3", "method.widths=[64,64],[32,32]", "eval.head='a,b'", "train.steps=200"])
    assert grid == {
        "train.lr": [0.1, "1e-3"],
        "method.widths": [[64, 64], [32, 32]],
        "eval.head": ["a,b"],
        "train.steps": [200],
    }
    with pytest.raises(ConfigError, match="empty value between commas"):
        Grid.from_text(["train.lr=0.1,"])
    with pytest.raises(ConfigError, match="group.key=value"):
        Grid.from_text(["lr=0.1,0.2"])


def test_dry_run_prints_the_grid_and_writes_nothing(runs_dir, capsys, no_slurm):
    code = run_cli(
        "sweep",
        "--methods",
        "pixels,protonet",
        "--benches",
        "synthetic-5w1s",
        "--seeds",
        "0-1",
        "--set",
        "bench.episodes=100,200",
        "--set",
        "eval.distance=cosine",
        "--runs-dir",
        runs_dir,
        "--dry-run",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "8 runs; 8 to submit" in out and "executor local" in out and "nothing submitted" in out
    assert "protonet synthetic-5w1s bench.episodes=200 seed 1" in out  # labels name what varies
    assert "eval.distance" not in out.split("\n", 1)[1]
    assert not runs_dir.exists()


def test_local_sweeps_default_to_one_worker_per_core(runs_dir, capsys, no_slurm, monkeypatch):
    """The default measured fastest on 2 cores (results/README.md#speed); --parallelism overrides it."""
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    grid = ("sweep", *PIXELS, "--seeds", "0-7", "--runs-dir", runs_dir, "--dry-run")
    assert run_cli(*grid) == 0
    assert "executor local: 3 worker process(es)" in capsys.readouterr().out
    assert run_cli(*grid, "--parallelism", "1") == 0
    assert "executor local: 1 worker process(es)" in capsys.readouterr().out


def test_sweep_file_with_flags_taking_precedence(runs_dir, tmp_path, capsys, no_slurm):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "name: from-file\nmethods: [pixels]\nbenches: synthetic-5w1s\nseeds: 0-2\n"
        "set:\n  bench.episodes: [100, 200]\n  eval.distance: cosine\n"
    )
    assert run_cli("sweep", spec, "--seeds", "5", "--runs-dir", runs_dir, "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep from-file (dry run): 2 runs")
    assert "bench.episodes=100 seed 5" in out and "seed 0" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (("--methods", "pixel", "--benches", "synthetic-5w1s"), "unknown method 'pixel'.*Did you mean 'pixels'"),
        (
            ("--methods", "pixels", "--benches", "synthetic-5w1s", "--set", "train.lrr=0.1,0.2"),
            "cannot plan pixels synthetic-5w1s train.lrr=0.1.*unknown config key 'train.lrr'",
        ),
        (
            ("--methods", "protonet", "--benches", "synthetic-5w1s", "--set", "train.lr=0.1,-1"),
            "train.lr=-1.*train.lr must be > 0",
        ),
        (
            ("--methods", "pixels", "--benches", "cifarfs-5w1s"),
            "cannot plan pixels cifarfs-5w1s: dataset cifarfs is not present.*harness data download cifarfs",
        ),
        (("--benches", "synthetic-5w1s"), "needs methods and benchmarks"),
        (("--methods", "pixels", "--benches", "synthetic-5w1s", "--seeds", "3-1"), "not a seed or an ascending range"),
        (("--methods", "pixels", "--benches", "synthetic-5w1s", "--name", "a/b"), "sweep name 'a/b' must be"),
        (
            ("--methods", "pixels", "--benches", "synthetic-5w1s", "--parallelism", "0"),
            "parallelism must be a positive",
        ),
    ],
)
def test_bad_grids_are_refused_before_anything_is_written(runs_dir, capsys, no_slurm, args, message):
    assert run_cli("sweep", *args, "--runs-dir", runs_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not runs_dir.exists()


def test_slurm_executor_without_a_controller_is_a_clear_error(runs_dir, capsys, no_slurm):
    assert run_cli("sweep", *PIXELS, "--executor", "slurm", "--runs-dir", runs_dir) == 2
    err = capsys.readouterr().err
    assert "no SLURM controller answers" in err and "slurm/local-cluster.sh start" in err
    assert run_cli("sweep", *PIXELS, "--executor", "local", "--profile", "local", "--runs-dir", runs_dir) == 2
    assert "--profile configures SLURM jobs" in capsys.readouterr().err


def test_profiles_are_validated(tmp_path):
    local, source = profiles.load_profile("local")
    assert source.endswith("slurm/profiles/local.yaml") and local["partition"] == "debug"
    params = profiles.slurm_parameters(profiles.load_profile("gpu-example")[0], "s")
    assert params["gpus_per_node"] == 1 and params["mem"] == "32GB" and params["additional_parameters"]["requeue"]
    assert params["job_name"] == "harness-s" and params["time"] == 240
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\ngpus: 2\n")
    with pytest.raises(ConfigError, match="unknown profile key 'gpus'. Valid keys: description, partition"):
        profiles.load_profile(str(bad))
    bad.write_text("time_min: soon\n")
    with pytest.raises(ConfigError, match="time_min must be int, got 'soon'"):
        profiles.load_profile(str(bad))
    with pytest.raises(ConfigError, match="unknown profile 'nope'. Profiles: .*gpu-example, local"):
        profiles.load_profile("nope")


def test_local_sweep_runs_skips_finished_and_reports_status(runs_dir, capsys, no_slurm):
    code = run_cli(
        "sweep", *PIXELS, "--seeds", "0-1", "--name", "first", "--parallelism", "2", "--runs-dir", runs_dir, "--wait"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "submitted 2 runs as 2 local worker process(es)" in out
    records = list(RunStore(runs_dir))
    assert sorted(r["seed"] for r in records) == [0, 1] and {r["status"] for r in records} == {"ok"}

    assert run_cli("status", "first", "--runs-dir", runs_dir) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("pixels synthetic-5w1s seed")]
    assert len(rows) == 2 and all("COMPLETED" in row and "%" in row for row in rows)
    assert "2 runs: 2 completed" in out

    assert run_cli("sweep", *PIXELS, "--seeds", "0-1", "--name", "first", "--runs-dir", runs_dir) == 0
    assert "2 runs; 0 to submit, 2 already done" in capsys.readouterr().out
    assert len(list((runs_dir / "sweeps" / "first" / "submissions").iterdir())) == 1

    # Another sweep skips what any sweep finished (same config hash and seed), unless --force.
    assert run_cli("sweep", *PIXELS, "--seeds", "0-2", "--name", "second", "--runs-dir", runs_dir, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 runs; 1 to submit, 2 already done" in out
    assert (
        run_cli("sweep", *PIXELS, "--seeds", "0-2", "--name", "second", "--runs-dir", runs_dir, "--dry-run", "--force")
        == 0
    )
    assert "3 runs; 3 to submit" in capsys.readouterr().out

    assert run_cli("status", "--runs-dir", runs_dir) == 0
    assert "first" in capsys.readouterr().out
    assert run_cli("status", "firts", "--runs-dir", runs_dir) == 2
    assert "no sweep 'firts'" in capsys.readouterr().err


def test_a_validation_only_sweep_reports_its_validation_accuracy(runs_dir, capsys, no_slurm):
    """eval.test=false runs score no test episodes: `--wait` and `harness status` show validation accuracy."""
    validation_only = ("--set", "train.steps=1", "--set", "train.val_episodes=2", "--set", "eval.test=false")
    grid = ("--methods", "protonet", "--benches", "synthetic-5w1s", *validation_only, "--name", "val")
    assert run_cli("sweep", *grid, "--parallelism", "1", "--runs-dir", runs_dir, "--wait") == 0
    out = capsys.readouterr().out
    (record,) = RunStore(runs_dir)
    assert "accuracy" not in record and record["val_accuracy"] is not None
    shown = f"validation {100 * record['val_accuracy']:.2f}% (test not scored)"
    assert shown in out
    assert run_cli("status", "val", "--runs-dir", runs_dir) == 0 and shown in capsys.readouterr().out


def test_plan_fixes_each_run_directory(runs_dir, capsys, no_slurm):
    """The run directories are fixed at submission, and a task may only resume the planned config."""
    sweep = Sweep(runs_dir, "fixed")
    spec = SweepSpec(["pixels"], ["synthetic-5w1s"], [0], {"bench.episodes": [100]}, {})
    runs = plan_runs(spec)
    plan = assign_run_dirs(sweep, runs, {})
    sweep.save_plan(plan, spec)
    again = plan_runs(spec)
    assign_run_dirs(sweep, again, {})
    assert again[0].run_dir == runs[0].run_dir and again[0].run_dir.startswith(str(runs_dir.absolute()))
    saved = json.loads(sweep.plan_path.read_text())
    assert saved["runs"][0]["config_hash"] == runs[0].config_hash and saved["runs"][0]["seed"] == 0
    stale = Run(**{**saved["runs"][0], "config_hash": "000000000000"})
    with pytest.raises(Exception, match="now resolves to config hash .* not 000000000000 as planned"):
        execute_run(stale, "cpu")


def test_a_run_that_finishes_while_the_scheduler_answers_is_done_not_failed(runs_dir, monkeypatch):
    """The runs directory is scanned before squeue answers; a run whose own record turned ok in between
    (squeue still says RUNNING) is done. It was 'ended RUNNING without a result' (seen under load in CI)."""
    from harness.sweep import status

    sweep = Sweep(runs_dir, "race")
    spec = SweepSpec(["pixels"], ["synthetic-5w1s"], [0], {"bench.episodes": [100]}, {})
    runs = plan_runs(spec)
    sweep.save_plan(assign_run_dirs(sweep, runs, {}), spec)
    jobs = {runs[0].key: "7_0"}
    submission = {"executor": "slurm", "submitted": "2026-01-01T00:00:00+00:00", "host": "h", "jobs": jobs}
    sweep.save_submission({**submission, "logs_folder": str(runs_dir / "logs"), "parameters": {}})
    execute_run(runs[0], "cpu")
    monkeypatch.setattr(Sweep, "finished", lambda self: {})  # the scan, made before the record was written
    monkeypatch.setattr(status, "slurm_states", lambda ids: ({"7_0": ("RUNNING", "0:00:37")}, []))
    ((run,), _) = status.assess(sweep, runs)
    assert (run.category, run.state, run.record["status"]) == ("done", "COMPLETED", "ok")


def test_cli_help_stays_light():
    code = (
        "import sys, harness.cli; harness.cli.build_parser(); "
        "heavy = {'torch', 'submitit', 'harness.runner', 'harness.resolve'} & set(sys.modules); "
        "sys.exit(', '.join(sorted(heavy)) or None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_truncated_plan_is_one_error_naming_it(tmp_path, capsys):
    sweep = Sweep(tmp_path / "runs", "s")
    sweep.plan_path.parent.mkdir(parents=True)
    sweep.plan_path.write_text('{"runs": [{"key": ')
    for command in (
        ["status", "s"],
        ["status"],
        ["sweep", "--methods", "pixels", "--benches", "synthetic-5w1s", "--name", "s", "--dry-run"],
    ):
        assert run_cli(*command, "--runs-dir", tmp_path / "runs") == 2, command
        assert str(sweep.plan_path) in one_error(capsys)


def test_two_sweeps_over_one_grid_make_each_computation_once(tmp_path):
    """The one-writer rule holds across sweeps, in the run store (a claim per config hash
    and seed): two sweeps of different names submitted together make the run once, and both finish."""
    import subprocess
    import sys

    from harness.store import RunStore

    grid = [
        "--methods",
        "protonet",
        "--benches",
        "synthetic-5w1s",
        "--seeds",
        "0",
        "--set",
        "train.steps=40",
        "--set",
        "bench.episodes=10",
        "--executor",
        "local",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--wait",
    ]
    sweeps = [
        subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "sweep", *grid, "--name", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs
    ok = [r for r in RunStore(tmp_path / "runs") if r["status"] == "ok"]
    assert len(ok) == 1, [r["run_dir"] for r in ok]
    logs = " ".join(p.read_text() for p in (tmp_path / "runs" / "sweeps").glob("*/logs/*/*_log.out"))
    assert "made meanwhile by another sweep" in logs  # both submitted it; the second waited on the claim
