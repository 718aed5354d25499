"""Hardening (issue 13): untrusted checkpoints never run code, bad input is one clear error before
any run directory exists, one writer per run directory, bounded sweep grids, no tracebacks."""

from __future__ import annotations

import json
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness import config
from harness.config import MAX_SWEEP_RUNS, SEED_MAX
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.store import read_record

from conftest import interrupt_at_step, only_run, run_cli

PROTONET = (
    "--method",
    "protonet",
    "--bench",
    "synthetic-5w1s",
    "--set",
    "train.steps=2",
    "--set",
    "bench.episodes=10",
    "--set",
    "method.train_ways=5",
    "--set",
    "method.train_queries=3",
    "--no-progress",
)
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


def one_line_error(capsys, *needles: str) -> str:
    """stderr of the last command: one line, no traceback, containing every needle."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("harness: ") and all(n in err for n in needles), err
    return err


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under a run directory but its lock file, by relative path."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-step ProtoNet run (copy it before changing it)."""
    runs = tmp_path_factory.mktemp("trained")
    assert run_cli("run", *PROTONET, "--runs-dir", runs) == 0
    return only_run(runs)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "source" / trained.name))


def mark_unfinished(run_dir: Path) -> None:
    record = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**record, "status": "failed", "reason": "interrupted"}))


# ------------------------------------------------------------------------------ untrusted checkpoints


class Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


TRAINING_METHODS = [
    "protonet",
    "maml",
    "maml-fo",
    "anil",
    "simclr",
    "byol",
    "bmssl",
    "bmssl-noboot",
    "bmssl-noinner",
    "bmssl-fo",
    "moco",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "swav",
    "dino",
    "supervised",
    "umtra",
    "cactus-protonet",
    "cactus-maml",
    "psco",
]
TINY = {
    "protonet": ["method.train_ways=5", "method.train_queries=2"],
    "bmssl": ["method.ways=4"],
    "cactus": [
        "train.steps=2",
        "method.encoder_steps=1",
        "method.partitions=2",
        "method.clusters=30",
        "method.encoder_batch_size=8",
    ],
}


def test_every_training_method_is_listed_here():
    from harness.methods import METHODS

    assert sorted(TRAINING_METHODS) == sorted(e.name for e in METHODS if e.load().trains)


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_every_methods_checkpoint_loads_as_plain_tensors(method, tmp_path):
    from harness.checkpoint import read_checkpoint
    from harness.runner import RunRequest, execute

    resolved = resolve(
        method,
        "synthetic-5w1s",
        sets=[
            "train.steps=1",
            "train.batch_size=2",
            "train.val_episodes=1",
            "eval.test=false",
            *TINY.get(method.split("-")[0], []),
        ],
    )
    execute(RunRequest(resolved, 0, tmp_path, progress=False))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (
        state["step"] == resolved.config.train.steps
        and state["optimizers"]
        and read_checkpoint(tmp_path / "checkpoint.pt")["done"] is True
    )


def test_a_checkpoint_that_runs_code_is_refused_by_eval_and_resume(run_copy, runs_dir, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    torch.save({"step": 2, "model": Payload(marker)}, run_copy / "checkpoint.pt")
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w5s", "--runs-dir", runs_dir) == 2
    one_line_error(capsys, "refusing to load", "checkpoint.pt", "could run code")
    assert not marker.exists() and not runs_dir.exists()

    mark_unfinished(run_copy)
    before = snapshot(run_copy)
    assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 2
    one_line_error(capsys, "refusing to load", "delete it to restart the run from step 0")
    assert not marker.exists() and snapshot(run_copy) == before


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_eval_of_a_missing_or_truncated_checkpoint_is_one_error(damage, run_copy, runs_dir, capsys):
    checkpoint = run_copy / "checkpoint.pt"
    if damage == "missing":
        checkpoint.unlink()
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert run_cli("eval", "--run", run_copy, "--bench", "synthetic-5w1s", "--runs-dir", runs_dir) == 2
    one_line_error(capsys, "checkpoint.pt", "is missing" if damage == "missing" else "truncated or corrupt")
    assert not runs_dir.exists()


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


# ------------------------------------------------------------------------------ one writer per run directory


def test_a_second_writer_of_a_run_directory_is_refused(run_copy, capsys):
    mark_unfinished(run_copy)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import fcntl, os, socket, sys
        handle = open({str(run_copy / ".lock")!r}, "a+")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write(f"pid {{os.getpid()}} on host {{socket.gethostname()}} since now")
        handle.flush()
        print("locked", flush=True)
        sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run_copy)
        assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 2
        one_line_error(capsys, f"is in use by pid {holder.pid} on host {socket.gethostname()}")
        assert snapshot(run_copy) == before
    finally:
        holder.communicate("")
    assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 0  # released: the run continues
    assert read_record(run_copy)["status"] == "ok"


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
