"""The notebook API: ``import harness`` stays light and gives ``load_runs``,
``leaderboard`` and ``table``, which return what ``harness results``, ``harness leaderboard --format csv``
and ``harness table --format`` print; the documented example runs, and README.md shows the same block."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness.errors import ConfigError, HarnessError
from harness.report.render import csv_text

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "results" / "runs" / "omniglot_lake"
SPEC = ROOT / "results" / "tables" / "omniglot_lake.yaml"
README_MARKER = "<!-- notebook-example -->"
FENCED = re.compile(r"```python\n(.*?)```", re.S)


def api_example() -> str:
    import harness.api

    return FENCED.search(harness.api.__doc__).group(1)


def test_the_notebook_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example reads the committed evidence by relative paths
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(api_example(), "harness/api.py example", "exec"), {})
    printed = out.getvalue()
    assert "protonet" in printed and "small1, 20-way 1-shot" in printed and "## Omniglot one-shot" in printed


def test_the_readme_shows_the_notebook_example():
    readme = (ROOT / "README.md").read_text()
    if README_MARKER not in readme:
        pytest.skip(
            f"README.md has no {README_MARKER} line before a ```python block yet; add the example of "
            "harness/api.py's docstring there (test_the_notebook_example_runs runs that example)"
        )
    block = FENCED.search(readme, readme.index(README_MARKER))
    assert block and block.group(1) == api_example(), (
        f"the ```python block after {README_MARKER} in README.md must be the example in harness/api.py's docstring"
    )


def test_load_runs_is_harness_results_with_the_records_and_settings_and_a_where_filter(capsys):
    runs = harness.load_runs(EVIDENCE)
    assert run_cli("results", "--runs-dir", EVIDENCE, "--format", "csv") == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype=str, keep_default_na=False)
    assert list(runs.columns[: len(printed.columns)]) == list(printed.columns)
    assert runs["run"].tolist() == printed["run"].tolist()
    assert {"config_hash", "run_dir", "val_accuracy", "train.lr", "method.backbone", "kind"} <= set(runs.columns)
    assert runs.columns.is_unique

    chosen = harness.load_runs([EVIDENCE], where={"train.lr": 0.003, "head": "prototype"})
    expected = runs[(runs["train.lr"] == 0.003) & (runs["head"] == "prototype")]
    assert 0 < len(chosen) < len(runs) and chosen["run"].tolist() == expected["run"].tolist()
    with pytest.raises(ConfigError, match="where key 'lr' is neither a config key"):
        harness.load_runs(EVIDENCE, where={"lr": 0.003})
    with pytest.raises(HarnessError, match="no such runs directory"):
        harness.load_runs(EVIDENCE / "missing")


def test_leaderboard_and_table_return_what_the_commands_print(capsys):
    board = harness.leaderboard(EVIDENCE, bench="omniglot-small1-20w1s-lake")
    assert (
        run_cli("leaderboard", "--runs-dir", EVIDENCE, "--bench", "omniglot-small1-20w1s-lake", "--format", "csv") == 0
    )
    printed = capsys.readouterr().out
    assert (
        csv_text(board) == printed == harness.leaderboard(EVIDENCE, bench=["omniglot-small1-20w1s-lake"], format="csv")
    )
    assert board["rank"].iloc[0] == 1 and board["rank"].is_monotonic_increasing and len(board) > 10

    cells = harness.table(SPEC)
    assert run_cli("table", SPEC, "--format", "csv") == 0
    assert csv_text(cells) == capsys.readouterr().out
    assert run_cli("table", SPEC, "--format", "md") == 0
    text = harness.table(SPEC, format="md")
    assert text + ("" if text.endswith("\n") else "\n") == capsys.readouterr().out
    with pytest.raises(ConfigError, match="format must be None .* or one of md, latex, csv"):
        harness.table(SPEC, format="html")


def test_import_harness_stays_light():
    code = (
        "import sys, harness; print(sorted({'torch', 'pandas', 'harness.api', 'wandb', 'mlflow'} & set(sys.modules)), "
        "callable(harness.load_runs), 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True", "False"]
    with pytest.raises(AttributeError, match="has no attribute 'load_run'"):
        harness.load_run  # noqa: B018


def test_load_runs_of_nothing_is_an_empty_frame_and_a_bad_filter_one_error(tmp_path):
    empty = harness.load_runs(tmp_path)
    assert empty.empty and {"run", "method", "accuracy %"} <= set(empty.columns)
    assert harness.load_runs(EVIDENCE, where={"train.steps": 123456}).empty  # a value no run has: no rows
    with pytest.raises(ConfigError, match=r"train\.stepz.*did you mean 'train\.steps'"):
        harness.load_runs(EVIDENCE, where={"train.stepz": 220})
    with pytest.raises(ConfigError, match=r"train\.steps must be int, got 'abc'"):
        harness.load_runs(EVIDENCE, where={"train.steps": "abc"})


def test_a_corrupt_record_is_named_by_every_reader(tmp_path, capsys):
    import shutil

    runs = tmp_path / "runs"
    for source in sorted(p for p in EVIDENCE.iterdir() if p.is_dir())[:2]:
        shutil.copytree(source, runs / source.name)
    victim = sorted(runs.iterdir())[0] / "result.json"
    victim.write_text(victim.read_text(encoding="utf-8")[:50], encoding="utf-8")
    assert run_cli("results", "--runs-dir", runs) == 2
    assert str(victim) in capsys.readouterr().err
    with pytest.raises(HarnessError, match=re.escape(str(victim))):
        harness.load_runs(runs)
    with pytest.raises(HarnessError, match=re.escape(str(victim))):
        harness.leaderboard(runs)
