"""Issue 28 (see before you run): the resolved configuration with each value's origin, a dry run that makes every
check a run makes and writes nothing, every check before a run directory exists, and pruning what failed."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from harness.store import read_record, write_config, write_record

from conftest import one_error, run_cli

TINY = ["train.steps=2", "bench.episodes=4", "train.checkpoint_every=1"]


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


def test_prune_lists_then_removes_failed_interrupted_and_dead_runs_only(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    base = ["--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=4", "--runs-dir", runs]
    for seed in range(4):
        assert run_cli("run", *base, "--seed", seed) == 0
    made = sorted(p for p in runs.iterdir())
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
    assert sorted(runs.iterdir()) == made
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run_cli("prune", "--runs-dir", runs) == 2  # not at a terminal: needs --yes
    assert "--yes" in one_error(capsys) and sorted(runs.iterdir()) == made
    assert run_cli("prune", "--runs-dir", runs, "--yes") == 0
    assert sorted(runs.iterdir()) == [kept] and read_record(kept)["status"] == "ok"


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
