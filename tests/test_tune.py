"""Blind tuning: trials on the validation split only, a fixed draw, the best validation accuracy chosen."""

from __future__ import annotations

import json

import yaml

from harness.store import RunStore
from harness.tune import draw_trials

from conftest import run_cli


def test_trial_draw_is_fixed_and_without_replacement():
    space = {"train.lr": [0.1, 0.01, 0.001], "method.train_ways": [5, 10]}
    first, again = draw_trials(space, 4), draw_trials(space, 4)
    assert first == again and len({tuple(sorted(t.items())) for t in first}) == 4
    assert len(draw_trials(space, 99)) == 6


def test_tune_scores_validation_only_and_picks_the_best(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"method.train_ways": [5, 20], "train.lr": [0.001]}))
    runs = tmp_path / "runs"
    out = tmp_path / "summary"
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
            "--set",
            "train.steps=8",
            "--set",
            "train.val_episodes=50",
            "--runs-dir",
            runs,
            "--out",
            out,
        )
        == 0
    )
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(summary["results"]) == 2 and summary["budget_minutes"] == 1.0
    best = max(summary["results"], key=lambda r: r["val_accuracy"])
    assert (
        summary["chosen"] == best["settings"]
        and json.loads(capsys.readouterr().out.splitlines()[-1])["chosen"] == best["settings"]
    )
    trials = list(RunStore(runs / "tuning" / "protonet-synthetic-5w1s"))
    assert len(trials) == 2 and all("accuracy" not in r and r["val_accuracy"] > 0.2 for r in trials)
    assert not (runs / "tuning" / "protonet-synthetic-5w1s" / trials[0]["run_id"] / "episodes.csv").exists()
    assert list(RunStore(runs)) == []  # trials are kept apart from results
    assert "Chosen:" in out.with_suffix(".md").read_text()
