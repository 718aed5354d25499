"""Evidence that survives a fresh clone: the run store's one definition of the run that counts,
all-or-nothing outputs, exact replay of step-capped runs, spec typos, `harness sweep --table`,
`--collect-from` and `harness reproduce`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import files
from harness.errors import ConfigError
from harness.methods import METHODS
from harness.report.spec import load_spec
from harness.store import RunStore, read_record, read_scores, write_record, write_scores
from harness.sweep.plan import Sweep

from conftest import run_cli

REPO = Path(__file__).resolve().parent.parent


def fake_run(runs_dir: Path, run_id: str, *, finished: str, status: str = "ok", seed: int = 0) -> Path:
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    write_record(
        run_dir,
        {
            "run_id": run_id,
            "method": "pixels",
            "benchmark": "synthetic-5w1s",
            "seed": seed,
            "config_hash": "abc123",
            "status": status,
            "started": "2026-01-01T00:00:00+00:00",
            "finished": finished,
            "accuracy": 0.5,
            "ci95": 0.1,
        },
    )
    return run_dir


def test_newest_ok_run_is_the_latest_finished_one_for_every_command(tmp_path):
    runs = tmp_path / "runs"
    # A sweep plans its run directory (and so its id) when it is submitted: the run with the older
    # id finished last and is the one that counts, whatever the directory names say.
    fake_run(runs, "20260101-000000-planned-early", finished="2026-01-03T00:00:00+00:00")
    fake_run(runs, "20260102-000000-made-later", finished="2026-01-02T00:00:00+00:00")
    fake_run(runs, "20260104-000000-failed", finished="2026-01-04T00:00:00+00:00", status="failed")
    store = RunStore(runs)
    assert store.newest_ok("abc123", 0)["run_id"] == "20260101-000000-planned-early"
    assert store.newest_ok("abc123", 1) is None
    assert Sweep(runs, "s").finished()[("abc123", 0)]["run_id"] == "20260101-000000-planned-early"
    newest, superseded = store.newest(store.records)
    assert [r["run_id"] for r in newest.values()] == ["20260101-000000-planned-early"]
    assert [r["run_id"] for r in superseded] == ["20260102-000000-made-later"]
    assert store.latest("abc123", 0)["status"] in ("ok", "failed")
    assert RunStore(tmp_path / "absent").records == []


def test_batch_leaves_every_file_as_it_was_when_anything_fails(tmp_path):
    (tmp_path / "a.md").write_text("old a")
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "kept").write_text("old evidence")
    (tmp_path / "ev" / files.OWNER_MARK).write_text("the test\n")
    with pytest.raises(RuntimeError):
        with files.batch():
            files.write_text(tmp_path / "a.md", "new a")
            files.write_text(tmp_path / "b.md", "new b")
            with files.stage_dir(tmp_path / "ev", "the test") as staged:
                (staged / "new").write_text("new evidence")
            raise RuntimeError("a later output failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "ev"]
    assert (tmp_path / "a.md").read_text() == "old a"
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [files.OWNER_MARK, "kept"]


TRAINED = [e.name for e in METHODS if e.name not in ("pixels", "mhd")]
CACTUS = ["method.encoder_steps=1", "method.partitions=2", "method.clusters=30", "method.encoder_batch_size=16"]


@pytest.mark.parametrize("method", [e.name for e in METHODS])
def test_a_step_capped_run_replays_bit_identically(method, tmp_path):
    """Same steps and seed → the same per-query outcomes, for every method (CPU)."""
    outcomes = []
    for attempt in ("a", "b"):
        assert (
            run_cli(
                "run",
                "--method",
                method,
                "--bench",
                "synthetic-5w1s",
                "--seed",
                "3",
                "--set",
                "train.steps=2",
                "--set",
                "bench.episodes=10",
                "--set",
                "train.val_episodes=2",
                "--set",
                "train.checkpoint_every=1",
                *[a for s in (CACTUS if method.startswith("cactus") else []) for a in ("--set", s)],
                "--run-dir",
                tmp_path / attempt,
                "--no-progress",
            )
            == 0
        )
        record = read_record(tmp_path / attempt)
        outcomes.append((record["accuracy"], read_scores(tmp_path / attempt)[1]))
        assert record["steps"] == (2 if method in TRAINED else 0) and record["threads"] >= 1
        assert record["wall_seconds"] >= record["train_seconds"]
    assert outcomes[0][0] == outcomes[1][0]
    assert np.array_equal(outcomes[0][1], outcomes[1][1])


# ------------------------------------------------------------------------------------ table specs


def tiny_spec(folder: Path, **change) -> Path:
    tree = {
        "title": "tiny",
        "seeds": "0-1",
        "columns": [{"label": "5w1s", "benchmark": "synthetic-5w1s", "where": {"bench.episodes": 20}}],
        "rows": [
            {"label": "protonet", "method": "protonet", "where": {"train.steps": 2}},
            {"label": "pixels", "method": "pixels"},
        ],
        **change,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    return folder / "tiny.yaml"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"columns": [{"benchmark": "synthetic-5w1"}]}, "synthetic-5w1s"),
        ({"rows": [{"method": "protonett"}]}, "(?i)did you mean 'protonet'"),
        ({"rows": [{"method": "protonet", "where": {"train.stepz": 2}}]}, "(?i)did you mean 'train.steps'"),
        ({"rows": [{"method": "protonet", "where": {"method.train_wayz": 2}}]}, "method.train_ways"),
    ],
)
def test_spec_typos_are_errors_with_the_closest_match(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(tiny_spec(tmp_path, **change))


def test_table_from_an_empty_store_fails_and_writes_nothing(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tables")
    (tmp_path / "tables" / "tiny.md").write_text("committed table")
    assert run_cli("table", spec, "--runs-dir", tmp_path / "empty") == 2
    assert "no finished run for any cell" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["tiny.md", "tiny.yaml"]
    assert (tmp_path / "tables" / "tiny.md").read_text() == "committed table"


def test_sweep_table_collect_regenerate_and_reproduce(tmp_path, capsys, monkeypatch):
    """The table's runs through `harness sweep --table`, their evidence collected into the spec's
    folder (a run still going beside them is left out, and the outputs say nothing of it), the table
    regenerated from that evidence alone (byte-identical), and `reproduce`:
    identical for an untouched cell, DIFFERENT (exit 1) for a cell whose stored outcome was changed."""
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path / "results" / "tables")
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", "runs", "--wait") == 0
    assert len([r for r in RunStore(Path("runs")) if r["status"] == "ok"]) == 3  # protonet × 2 seeds, pixels × 1
    unfinished = Path("runs") / "20990101-000000-protonet-unfinished"  # a run still going beside them: not evidence
    shutil.copytree(next(p for p in Path("runs").iterdir() if "-protonet-" in p.name), unfinished)
    write_record(unfinished, {**json.loads((unfinished / "result.json").read_text()), "status": "running"})
    assert run_cli("table", spec, "--collect-from", "runs") == 0
    evidence = tmp_path / "results" / "runs" / "tiny"
    assert len([p for p in evidence.iterdir() if p.is_dir()]) == 3
    assert not list(evidence.rglob("checkpoint.pt"))
    made = {p: p.read_bytes() for p in (tmp_path / "results" / "tables").glob("tiny.*")}
    shutil.rmtree("runs")
    assert run_cli("table", spec) == 0  # no flags: the committed evidence
    assert {p: p.read_bytes() for p in (tmp_path / "results" / "tables").glob("tiny.*")} == made
    capsys.readouterr()

    assert run_cli("reproduce", spec, "--only", "pixels", "--executor", "local", "--runs-dir", "again") == 0
    out = capsys.readouterr().out
    assert "identical" in out and "1 identical, 0 consistent, 0 different" in out

    stored = next(p for p in evidence.iterdir() if "-protonet-" in p.name and "-s0-" in p.name)
    accuracies, correct = read_scores(stored)
    correct[0, :] = ~correct[0, :]  # a deliberately changed cell
    write_scores(stored, correct.mean(axis=1), correct)
    record = json.loads((stored / "result.json").read_text())
    write_record(stored, {**record, "accuracy": float(correct.mean())})
    assert (
        run_cli("reproduce", spec, "--only", "protonet", "--seeds", "0", "--executor", "local", "--runs-dir", "again")
        == 1
    )
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "0 identical" in out


def test_committed_tables_regenerate_unchanged_from_committed_evidence(tmp_path):
    """What CI checks after a fresh clone: `harness table results/tables/*.yaml` changes no byte."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results)
    specs = sorted((results / "tables").glob("*.yaml"))
    assert specs
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert run_cli("table", *specs) == 0
    after = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert after == before
