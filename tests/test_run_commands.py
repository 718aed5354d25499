"""The run commands (harness/run_commands.py: run, eval, prune) and `harness show`. See before you run: the resolved
configuration with each value's origin, a dry run that makes every check a run makes and writes nothing, every check
before a run directory exists, and pruning what failed. Bad input (nan or infinity, seeds and grids out of range, a
config that is not UTF-8 or not a mapping, an unwritable runs directory) is one error line, never a traceback;
commands point only at files they wrote; Ctrl-C prints the resume command; an eval that crashes is recorded as
failed."""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import config
from harness.config import MAX_SWEEP_RUNS, SEED_MAX
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.store import read_record, write_config, write_record

from conftest import PROTONET, interrupt_at_step, one_error, one_line_error, only_run, run_cli

TINY = ["train.steps=2", "bench.episodes=4", "train.checkpoint_every=1"]
PIXELS = ("--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=10")


PIXELS_SWEEP = (
    "--methods",
    "pixels",
    "--benches",
    "synthetic-5w1s",
    "--set",
    "bench.episodes=10",
    "--executor",
    "local",
)


def test_print_config_gives_every_key_with_its_origin(tmp_path, capsys):
    from harness.resolve import resolve

    config = tmp_path / "mine.yaml"
    config.write_text("train: {lr: 0.01}\n")
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--print-config",
            "--config",
            config,
            "--set",
            "eval.distance=cosine",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    origins = dict(re.match(r"  (\w+): .*# (.+)$", line).groups() for line in lines if line.startswith("  "))
    cfg = resolve("protonet", "synthetic-5w1s").config
    keys = {f.name for group in cfg.groups() for f in dataclasses.fields(cfg.group(group))}
    assert set(origins) == keys  # every key, each with an origin (names are unique across groups here)
    assert origins["ways"] == "benchmark synthetic-5w1s" and origins["image_size"] == "benchmark synthetic-5w1s"
    assert origins["steps"] == "preset protonet.yaml [synthetic]"
    assert origins["optimizer"] == "preset protonet.yaml [default]"
    assert origins["lr"] == str(config) and origins["distance"] in ("--set", "default")
    assert origins["weight_decay"] == "default"
    assert not (tmp_path / "runs").exists()


def test_show_gives_a_methods_levels_and_its_values_on_a_benchmark(capsys):
    assert run_cli("show", "bmssl") == 0
    out = capsys.readouterr().out
    assert "preset bmssl.yaml [synthetic]: train.steps=200" in out and "preset bmssl.yaml [default]" in out
    assert run_cli("show", "bmssl", "--bench", "synthetic-5w1s") == 0
    assert re.search(r"  steps: 200 +# preset bmssl.yaml \[synthetic\]", capsys.readouterr().out)


def test_a_dry_run_passes_a_good_command_and_makes_nothing(tmp_path, capsys):
    assert (
        run_cli("run", "--method", "bmssl", "--bench", "synthetic-5w1s", "--dry-run", "--runs-dir", tmp_path / "runs")
        == 0
    )
    out = capsys.readouterr().out
    assert "every check passed" in out and "200 steps" in out and not (tmp_path / "runs").exists()


def omniglot_lake_ready() -> bool:
    return (
        bool(os.environ.get("HARNESS_DATA_MIRROR")) and (Path(os.environ["HARNESS_DATA_MIRROR"]) / "omniglot").is_dir()
    )


FAILING = [  # (bench, settings, the key the error names)
    ("synthetic-5w1s", ["data.holdout=Klingon"], "data.holdout"),
    ("synthetic-5w1s", ["data.image_size=100000"], "data.image_size"),
    ("synthetic-5w1s", ["bench.episodes=10000000000"], "bench.episodes"),
    ("synthetic-5w1s", ["train.val_episodes=10000000000"], "train.val_episodes"),
    ("synthetic-5w1s", ["method.train_ways=300"], "method.train_ways"),
    ("synthetic-5w1s", ["method.train_queries=30"], "method.train_queries"),
    ("synthetic-5w1s", ["bench.ways=100"], "bench.ways"),
    pytest.param(
        "omniglot-small1-20w1s-lake",
        ["data.holdout=Klingon"],
        "data.holdout",
        marks=pytest.mark.skipif(not omniglot_lake_ready(), reason="needs HARNESS_DATA_MIRROR with omniglot"),
    ),
]


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("bench, settings, key", FAILING, ids=lambda v: v if isinstance(v, str) else "")
def test_every_check_comes_before_a_run_directory(bench, settings, key, dry, tmp_path, capsys):
    runs = tmp_path / "runs"
    tiny = TINY if bench.startswith("synthetic") else ["train.steps=2"]  # Lake's episodes are the official ones
    if not bench.startswith("synthetic"):
        assert run_cli("data", "download", "omniglot-small1") == 0  # a dry run fetches nothing
    sets = [a for s in [*tiny, *settings] for a in ("--set", s)]
    code = run_cli(
        "run",
        "--method",
        "protonet",
        "--bench",
        bench,
        *sets,
        "--runs-dir",
        runs,
        "--no-progress",
        *(["--dry-run"] if dry else []),
    )
    assert code == 2
    assert key in one_error(capsys)
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize(
    "method, key", [("cactus-protonet", "method.train_ways=5"), ("cactus-maml", "bench.ways=5")], ids=lambda v: v
)
def test_cactus_tasks_need_as_many_clusters_as_ways_before_a_run_directory(method, key, tmp_path, capsys):
    """CACTUs' classes are k-means clusters: fewer clusters than ways used to fail after its encoder phase."""
    runs = tmp_path / "runs"
    sets = [a for s in [*TINY, "method.train_ways=5", "method.clusters=4"] for a in ("--set", s)]
    if method == "cactus-maml":
        sets = sets[:-4] + sets[-2:]  # MAML's tasks take bench.ways
    assert run_cli("run", "--method", method, "--bench", "synthetic-5w1s", *sets, "--runs-dir", runs) == 2
    err = one_error(capsys)
    assert "method.clusters=4" in err and f"({key})" in err and "at least 5" in err
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_dry_run_names_the_data_it_would_fetch_and_fetches_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "empty-data-root"))
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "omniglot-small1-20w1s-lake",
            "--dry-run",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 0
    )
    assert "would first fetch its data" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "omniglot-small1-20w1s-lake",
            "--dry-run",
            "--no-download",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 2
    )
    assert "is not present" in one_error(capsys)
    assert not (tmp_path / "empty-data-root").exists() or not any((tmp_path / "empty-data-root").rglob("*.zip"))


def run_dirs(runs) -> list:
    """The run directories under ``runs`` (beside them: the store's index, .harness-index.sqlite)."""
    return sorted(p for p in runs.iterdir() if p.is_dir())


def test_prune_lists_then_removes_failed_interrupted_and_dead_runs_only(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    base = ["--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=4", "--runs-dir", runs]
    for seed in range(4):
        assert run_cli("run", *base, "--seed", seed) == 0
    made = run_dirs(runs)
    failed, dead, interrupted, kept = made
    for run_dir, status, reason in (
        (failed, "failed", "RunFailed: diverged"),
        (dead, "running", None),
        (interrupted, "failed", "interrupted"),
    ):
        record = read_record(run_dir)
        record.update(status=status, reason=reason)
        write_record(run_dir, {k: v for k, v in record.items() if k != "run_dir"})
    capsys.readouterr()
    assert run_cli("prune", "--runs-dir", runs, "--dry-run") == 0
    out = capsys.readouterr().out
    assert all(p.name in out for p in (failed, dead, interrupted)) and kept.name not in out
    assert run_dirs(runs) == made
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run_cli("prune", "--runs-dir", runs) == 2  # not at a terminal: needs --yes
    assert "--yes" in one_error(capsys) and run_dirs(runs) == made
    assert run_cli("prune", "--runs-dir", runs, "--yes") == 0
    assert run_dirs(runs) == [kept] and read_record(kept)["status"] == "ok"


def test_prune_leaves_a_run_that_a_live_process_holds(tmp_path):
    from harness import files, rundir

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    write_config(run_dir, {"method_name": "m", "benchmark": "b"})
    write_record(
        run_dir,
        {
            "run_id": "r1",
            "kind": "train",
            "status": "running",
            "config_hash": "x",
            "seed": 0,
            "method": "m",
            "benchmark": "b",
            "started": "2026-01-01T00:00:00+00:00",
        },
    )
    with files.locked(run_dir / rundir.LOCK):
        assert rundir.unfinished(tmp_path / "runs") == ([], [])
    assert [r["run_id"] for r in rundir.unfinished(tmp_path / "runs")[0]] == ["r1"]


def test_prune_removes_nothing_of_the_users_own_folders_and_says_why(tmp_path, capsys):
    """A folder with a result.json the harness did not write (no run record, no config.yaml) is kept, with
    its siblings; a symbolic link to a failed run is reported, not followed or removed (no traceback)."""
    runs = tmp_path / "runs"
    mine = runs / "exp2"
    mine.mkdir(parents=True)
    (mine / "result.json").write_text('{"score": 0.91}', encoding="utf-8")
    (mine / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=4",
            "--runs-dir",
            elsewhere,
        )
        == 0
    )
    real = next(elsewhere.iterdir())
    record = read_record(real)
    record.update(status="failed", reason="interrupted")
    write_record(real, {k: v for k, v in record.items() if k != "run_dir"})
    (runs / real.name).symlink_to(real, target_is_directory=True)
    capsys.readouterr()
    assert run_cli("prune", "--runs-dir", runs, "--yes") == 0
    out = capsys.readouterr().out
    assert "kept" in out and "exp2" in out and "not a harness run record" in out
    assert "symbolic link" in out and "nothing to prune" in out
    assert (mine / "table.csv").is_file() and (runs / real.name).is_symlink() and real.is_dir()


# ------------------------------------------------------------------------------ eval


def test_eval_that_crashes_while_scoring_records_failed(run_copy, runs_dir, monkeypatch, capsys):
    import harness.crosseval

    def crash(*args, **kwargs):
        raise RuntimeError("scoring crashed")

    monkeypatch.setattr(harness.crosseval, "score", crash)
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w1s", "--runs-dir", runs_dir) == 1
    err = capsys.readouterr().err
    out_dir = only_run(runs_dir)
    assert "run failed (RuntimeError: scoring crashed)" in err and str(out_dir / "result.json") in err
    record = read_record(out_dir)
    assert record["status"] == "failed" and record["reason"] == "RuntimeError: scoring crashed"
    assert record["kind"] == "eval" and "scoring crashed" in (out_dir / "error.log").read_text()


def test_eval_of_a_run_whose_config_is_not_a_mapping(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "train.steps=1",
            "--set",
            "bench.episodes=5",
            "--run-dir",
            tmp_path / "run",
            "--no-progress",
        )
        == 0
    )
    (tmp_path / "run" / "config.yaml").write_text("- a\n- list\n")
    capsys.readouterr()
    assert run_cli("eval", "--run", tmp_path / "run", "--bench", "synthetic-5w5s", "--runs-dir", tmp_path / "ev") == 2
    assert "not the mapping of setting groups" in one_error(capsys)


# ------------------------------------------------------------------------------ bounded sweeps


def test_an_unbounded_seed_range_is_refused_before_it_is_expanded(tmp_path):
    """In a child process limited to 2 GiB of address space (the range once took 23 GB)."""
    code = (
        "import sys; from harness.cli import main; sys.exit(main(['sweep', '--methods', 'pixels', '--benches', "
        f"'synthetic-5w1s', '--seeds', '0-100000000', '--dry-run', '--executor', 'local', '--runs-dir', {str(tmp_path)!r}]))"
    )

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=limit_memory
    )
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "100,000,001 seeds" in err and f"at most {MAX_SWEEP_RUNS:,} runs" in err


def test_seeds_out_of_range_and_oversized_grids_are_refused(runs_dir, capsys):
    with pytest.raises(ConfigError, match=f"out of range; seeds are integers from 0 to {SEED_MAX}"):
        config.parse_seeds("0-99999999999999999999")
    lrs = ",".join(str(0.001 * (i + 1)) for i in range(101))
    assert (
        run_cli(
            "sweep",
            "--methods",
            "pixels",
            "--benches",
            "synthetic-5w1s",
            "--seeds",
            "0-99",
            "--set",
            f"train.lr={lrs}",
            "--dry-run",
            "--executor",
            "local",
            "--runs-dir",
            runs_dir,
        )
        == 2
    )
    one_line_error(capsys, "10,100 runs", "101 settings × 100 seeds", f"at most {MAX_SWEEP_RUNS:,}")


# ------------------------------------------------------------------------------ values checked before any work


@pytest.mark.parametrize(
    "item",
    [
        "train.lr=nan",
        "train.lr=.inf",
        "train.budget_minutes=nan",
        "train.budget_minutes=inf",
        "data.train_fraction=nan",
        "data.train_fraction=-inf",
        "train.steps=inf",
        "bench.episodes=nan",
    ],
)
def test_nan_and_infinity_fail_the_checks(item):
    with pytest.raises(ConfigError, match=f"{item.split('=')[0]} must be a finite number"):
        resolve("protonet", "synthetic-5w1s", sets=[item])


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("pixels", ["--set", "train.budget_minutes=nan"], "train.budget_minutes must be a finite number, got nan"),
        (
            "protonet",
            ["--set", "method.train_ways=500"],
            "method.train_ways=500: 500-way training episodes need 500 "
            "training classes, and synthetic-5w1s has 160; use at most 160",
        ),
        ("protonet", ["--set", "data.image_size=3"], "data.image_size=3 is too small for the conv4 backbone"),
        ("pixels", ["--set", "eval.head=adapt"], "eval.head=adapt needs a method that adapts to each episode"),
        ("protonet", ["--seed", "99999999999999999999"], f"seed must be an integer from 0 to {SEED_MAX}"),
    ],
)
def test_late_checks_happen_before_the_run_directory_exists(method, options, message, runs_dir, capsys):
    assert run_cli("run", "--method", method, "--bench", "synthetic-5w1s", *options, "--runs-dir", runs_dir) == 2
    one_line_error(capsys, message)
    assert not runs_dir.exists()


# ------------------------------------------------------------------------------ one error line, never a traceback


def test_a_config_file_that_is_not_utf8_is_one_error(tmp_path, runs_dir, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("train:\n  lr: 0.01  # é\n".encode("latin-1"))
    assert run_cli("run", *PIXELS, "--config", config, "--runs-dir", runs_dir) == 2
    one_line_error(capsys, "latin1.yaml is not UTF-8 text (byte 0xe9")


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write, not even root: mode 0555, and (as root) the immutable attribute."""
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    try:
        (path / "probe").touch()
    except OSError:
        pass
    else:
        (path / "probe").unlink()
        immutable = (
            shutil.which("chattr") and subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0
        )
        if not immutable:
            pytest.skip("cannot make a read-only directory here (root without chattr +i)")
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", path], check=True)
    path.chmod(0o755)


def test_eval_and_sweep_into_a_read_only_runs_dir_are_one_error(run_copy, read_only_dir, capsys):
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w1s", "--runs-dir", read_only_dir) == 2
    one_line_error(capsys, "cannot write the run directory", str(read_only_dir), "pass a writable --runs-dir")
    assert run_cli("sweep", *PIXELS_SWEEP, "--runs-dir", read_only_dir) == 2
    one_line_error(capsys, str(read_only_dir / "sweeps"))
    assert list(read_only_dir.iterdir()) == []


def test_commands_point_only_at_files_they_wrote(run_copy, tmp_path, capsys):
    a_file = tmp_path / "runs-is-a-file"
    a_file.write_text("")
    assert run_cli("run", *PIXELS, "--runs-dir", a_file) == 2
    err = one_line_error(capsys, "cannot write the run directory", "Not a directory", "pass a writable --runs-dir")
    assert "record:" not in err and "traceback:" not in err
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w1s", "--runs-dir", a_file) == 2
    one_line_error(capsys, "cannot write the run directory", "Not a directory")
    assert run_cli("sweep", *PIXELS_SWEEP, "--runs-dir", a_file) == 2
    one_line_error(capsys, "Not a directory", str(a_file))
    if not torch.cuda.is_available():
        assert run_cli("run", *PIXELS, "--device", "cuda", "--runs-dir", tmp_path / "runs") == 2
        err = one_line_error(capsys, "--device cuda: no CUDA device")
        assert "record:" not in err and not (tmp_path / "runs").exists()


def test_ctrl_c_prints_the_resume_command_and_a_resumed_run_drops_its_traceback(runs_dir, monkeypatch, capsys):
    from harness.methods.protonet import ProtoNet

    restore = interrupt_at_step(monkeypatch, ProtoNet, 0)
    assert run_cli("run", *PROTONET, "--runs-dir", runs_dir) == 130
    run_dir = only_run(runs_dir)
    err = one_line_error(capsys, "interrupted", f"--run-dir {run_dir} --resume")
    assert read_record(run_dir)["reason"] == "interrupted" and (run_dir / "error.log").is_file()

    restore()
    command = shlex.split(err.split("with: ", 1)[1])
    assert command[:2] == ["harness", "run"]
    assert run_cli(*command[1:]) == 0
    assert read_record(run_dir)["status"] == "ok" and not (run_dir / "error.log").exists()
