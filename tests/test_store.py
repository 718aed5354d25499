"""The run store's evidence checks (harness/store.py, with its index in harness/store_index.py): every record a report
reads is checked against its own files. Each kind of damage makes `harness table` fail with one error naming the
damaged file, writing nothing, and `harness verify` exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from test_evidence import tiny_spec


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A tiny spec's collected evidence (protonet × 2 seeds, pixels)."""
    root = tmp_path_factory.mktemp("integrity")
    spec = tiny_spec(root / "tables")
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", root / "runs", "--wait") == 0
    assert run_cli("table", spec, "--collect-from", root / "runs") == 0
    return root


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


DAMAGE = {
    "truncated result.json": ("result.json", lambda p: p.write_text(p.read_text()[:100])),
    "accuracy edited": ("result.json", lambda p: edit_json(p, lambda r: r.update(accuracy=0.99))),
    "ok record without accuracy": ("result.json", lambda p: edit_json(p, lambda r: r.pop("accuracy"))),
    "truncated trials.npy": ("trials.npy", lambda p: p.write_bytes(p.read_bytes()[:60])),
    "reshaped trials.npy": ("trials.npy", lambda p: np.save(p, np.load(p).reshape(-1, 1))),
    "corrupt config.yaml": ("config.yaml", lambda p: p.write_text("method: [unclosed\n")),
    "steps edited in config.yaml": (
        "config.yaml",
        lambda p: p.write_text(p.read_text().replace("  steps: 2\n", "  steps: 20\n", 1)),
    ),
    "seed and steps edited in result.json": (
        "result.json",
        lambda p: edit_json(p, lambda r: r.update(seed=2, steps=999)),
    ),
    "method edited in result.json": ("result.json", lambda p: edit_json(p, lambda r: r.update(method="maml"))),
    "text in train_log.csv": (
        "train_log.csv",
        lambda p: p.write_text(p.read_text().replace("\n2,", "\n2,x", 1).replace(",", ",oops", 1) + "4,zz\n"),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_evidence_is_one_error_naming_the_file(committed, tmp_path, damage, capsys):
    root = tmp_path / "copy"
    shutil.copytree(committed, root)
    name, damage_it = DAMAGE[damage]
    victim = next(p for p in sorted((root / "runs" / "tiny").iterdir()) if "-protonet-" in p.name)
    damage_it(victim / name)
    outputs = {p: p.read_bytes() for p in (root / "tables").iterdir()}
    spec = root / "tables" / "tiny.yaml"
    capsys.readouterr()
    assert run_cli("table", spec) == 2
    err = capsys.readouterr().err
    assert str(victim / name) in err and err.count("harness: error") == 1 and "Traceback" not in err
    assert {p: p.read_bytes() for p in (root / "tables").iterdir()} == outputs
    assert run_cli("verify", spec) == 1
    assert str(victim / name) in capsys.readouterr().err


def test_verify_passes_intact_evidence(committed, capsys):
    assert run_cli("verify", committed / "tables" / "tiny.yaml") == 0
    assert "3 runs" in capsys.readouterr().out


def test_the_index_serves_unchanged_runs_and_never_a_changed_one(committed, tmp_path, capsys):
    """Reports keep each run's checked facts in <runs dir>/.harness-index.sqlite and use them only while the
    run's files are unchanged: a later edit is caught by the next report; verify reads every file again."""
    import os

    from harness.report.selection import Store
    from harness.store import RunStore
    from harness.store_index import INDEX

    root = tmp_path / "copy"
    shutil.copytree(committed, root)
    runs, spec = root / "runs" / "tiny", root / "tables" / "tiny.yaml"
    assert run_cli("table", spec) == 0 and (runs / INDEX).is_file()
    store = RunStore(runs)
    Store(store)  # a second report: every ok run served from the index, none read again
    assert all(store.cached(r, "checked") for r in store.records if r["status"] == "ok")
    victim = next(p for p in sorted(runs.iterdir()) if "-protonet-" in p.name)
    edit_json(victim / "result.json", lambda r: r.update(accuracy=0.99))
    capsys.readouterr()
    assert run_cli("table", spec) == 2 and str(victim / "result.json") in capsys.readouterr().err
    edit_json(
        victim / "result.json",
        lambda r: r.update(
            accuracy=json.loads((committed / "runs" / "tiny" / victim.name / "result.json").read_text())["accuracy"]
        ),
    )
    assert run_cli("table", spec) == 0
    # an edit that keeps a file's size and time escapes the index, not verify, which reads every file again
    stat = os.stat(victim / "trials.npy")
    np.save(victim / "trials.npy", ~np.load(victim / "trials.npy"))
    os.utime(victim / "trials.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run_cli("table", spec) == 0
    assert run_cli("verify", spec) == 1 and "disagrees with trials.npy" in capsys.readouterr().err
