"""Shared fixtures: a private data root per test session, the real Omniglot mirror, CLI helpers, and a
finished 2-step ProtoNet run to copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import kernels

# Tests train in this process: its kernels are pinned before torch starts, as the CLI pins a run's.
kernels.pin(kernels.level_pins("portable"))

MIRROR = os.environ.get("HARNESS_DATA_MIRROR", "")


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory) -> Path:
    """Every test session gets an empty data root: datasets arrive only through the harness's own
    download path (the mirror), exactly as a user's would."""
    root = tmp_path_factory.mktemp("harness-data")
    os.environ["HARNESS_DATA"] = str(root)
    return root


@pytest.fixture(scope="session")
def omniglot_small1(data_root) -> Path:
    """Lake's minimal set 1 + official runs, fetched through HARNESS_DATA_MIRROR (skips without it)."""
    if not (MIRROR and (Path(MIRROR) / "omniglot" / "images_background_small1.zip").is_file()):
        pytest.skip(
            "real Omniglot needs HARNESS_DATA_MIRROR pointing at a folder with omniglot/images_background_small1.zip "
            "and omniglot/all_runs.zip (CI: ../shared/data)"
        )
    from harness.data import get_dataset

    get_dataset("omniglot-small1").download(data_root, progress=False)
    return data_root


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


def run_cli(*args: str) -> int:
    """Run the harness CLI in-process; returns its exit code."""
    from harness.cli import main

    return main([str(a) for a in args])


def one_error(capsys) -> str:
    """The CLI's standard error, asserted to hold exactly one ``harness: error`` and no traceback."""
    err = capsys.readouterr().err
    assert err.count("harness: error") == 1 and "Traceback" not in err, err
    return err


def only_run(runs_dir: Path) -> Path:
    """The single run directory under ``runs_dir``."""
    runs = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def interrupt_at_step(monkeypatch, method_class, step: int):
    """Make ``method_class.training_step`` raise KeyboardInterrupt at ``step`` (a crash mid-run);
    returns a function that restores the real step."""
    real = method_class.training_step

    def interrupted(self, data, current, progress, generator):
        if current == step:
            raise KeyboardInterrupt
        return real(self, data, current, progress, generator)

    monkeypatch.setattr(method_class, "training_step", interrupted)
    return lambda: monkeypatch.setattr(method_class, "training_step", real)


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


# The settings of the Lake table's bmssl-proto rows (the bmssl preset before its first level and target were
# made to work), which the pinned BMSSL results and the special-case BMSSL tests were written for.
BMSSL_PROTO = (
    "method.views_per_image=4",
    "method.target_views=0",
    "method.head_init=proto",
    "method.center=false",
    "method.inner_lr_units=loss",
    "method.inner_lr=0.5",
    "method.inner_steps=1",
    "method.target_steps=1",
)


def bmssl_proto(method: str) -> list[str]:
    """``BMSSL_PROTO`` without the settings ``method`` (an ablation) fixes, which a run may not set."""
    from harness.methods import METHODS

    fixed = {f"{group}.{key}" for group, values in METHODS.get(method).fixed.items() for key in values}
    return [s for s in BMSSL_PROTO if s.split("=")[0] not in fixed]
