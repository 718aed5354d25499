"""Output polish: `harness results` shows counts as integers, accuracy in percent and no `nan`;
tables fit the terminal; a closed pipe ends a command quietly; every command and `data` action has its
own help."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.terminal import fitted

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
LAKE_RUNS = REPO / "results" / "runs" / "omniglot_lake"


@pytest.fixture
def store(tmp_path) -> Path:
    """A finished run and a failed one (no accuracy, episodes or steps)."""
    records = {
        "20260101-000000-protonet-omniglot-small1-20w1s-lake-s0-45d2b343-09ef": {
            "method": "protonet",
            "seed": 0,
            "status": "ok",
            "accuracy": 0.605,
            "ci95": 0.0599,
            "episodes": 2000,
            "steps": 150,
            "train_seconds": 160.77,
            "reason": None,
            "finished": "2026-01-01T00:03:00+00:00",
        },
        "20260101-000100-simclr-omniglot-small1-20w1s-lake-s1-91cfe5d3-b636": {
            "method": "simclr",
            "seed": 1,
            "status": "failed",
            "reason": "RuntimeError: out of memory while allocating the projection head's activations",
        },
    }
    for run_id, record in records.items():
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        record = {"run_id": run_id, "benchmark": "omniglot-small1-20w1s-lake", "head": "prototype", **record}
        (tmp_path / "runs" / run_id / "result.json").write_text(json.dumps(record))
    return tmp_path / "runs"


def results(capsys, store: Path, *options: str) -> str:
    capsys.readouterr()
    assert run_cli("results", "--runs-dir", store, *options) == 0
    return capsys.readouterr().out


def test_results_shows_integers_percent_and_no_nan(store, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = results(capsys, store)
    header, _, *lines = text.splitlines()
    assert header.split() == [
        "run",
        "method",
        "benchmark",
        "seed",
        "head",
        "status",
        "accuracy",
        "%",
        "ci95",
        "%",
        "episodes",
        "steps",
        "train_s",
        "reason",
    ]
    ok, failed = (next(line.split() for line in lines if f" {method} " in line) for method in ("protonet", "simclr"))
    assert ok[3:] == ["0", "prototype", "ok", "60.50", "5.99", "2000", "150", "160.8"]
    assert failed[3:7] == ["1", "prototype", "failed", "RuntimeError:"] and failed[-1] == "activations"
    assert "nan" not in text.lower() and "2000.0" not in text and "0.6050" not in text
    md = results(capsys, store, "--format", "md")
    assert "|        60.50 |     5.99 |       2000 |     150 |     160.8 |" in md and "nan" not in md.lower()
    csv = results(capsys, store, "--format", "csv").splitlines()
    assert csv[0] == "run,method,benchmark,seed,head,status,accuracy %,ci95 %,episodes,steps,train_s,reason"
    assert csv[1].endswith(
        ",1,prototype,failed,,,,,,RuntimeError: out of memory while allocating the projection head's activations"
    )
    assert csv[2].endswith(",0,prototype,ok,60.5,5.99,2000,150,160.77,")


@pytest.mark.parametrize("columns", [80, 120])
def test_results_fit_the_terminal(columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    text = results(capsys, LAKE_RUNS)
    assert max(map(len, text.splitlines())) <= columns
    assert "accuracy %" in text and "seed" in text and "head" not in text.splitlines()[0]  # head: left out first
    run_ids = sorted(p.name for p in LAKE_RUNS.iterdir() if p.is_dir())
    first_column = "".join(line.split()[0] for line in text.splitlines()[2:] if line.strip() and line[0] != " ")
    assert all(run_id in first_column for run_id in run_ids)  # every run id is all there, over several lines
    monkeypatch.delenv("COLUMNS")  # not a terminal, no $COLUMNS: one line per run, as wide as it is
    assert len(results(capsys, LAKE_RUNS).splitlines()) == 2 + len(run_ids)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert len(results(capsys, LAKE_RUNS, "--format", "md").splitlines()) == 2 + len(run_ids)  # md is never wrapped


@pytest.mark.parametrize("columns", [80, 120])
def test_listings_fit_the_terminal(columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert run_cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines[:-1])) <= columns and any(line.startswith("bmssl ") for line in lines)


def test_fitted_wraps_long_columns_and_drops_optional_ones():
    rows = [["a" * 40, 1, "short", "x" * 30], ["b" * 10, 22, "tiny", ""]]
    headers = ["name", "n", "kind", "note"]
    assert fitted(rows, headers, wrap=["name", "note"], width=None) == fitted(rows, headers, wrap=[], width=None)
    wide = fitted(rows, headers, wrap=["name", "note"], width=200)
    assert len(wide.splitlines()) == 4
    narrow = fitted(rows, headers, wrap=["name", "note"], width=50)
    assert max(map(len, narrow.splitlines())) <= 50 and len(narrow.splitlines()) > 4 and "kind" in narrow
    narrower = fitted(rows, headers, wrap=["name", "note"], drop=["kind"], width=40)
    assert max(map(len, narrower.splitlines())) <= 40 and "kind" not in narrower and "short" not in narrower


def harness_command(*args: str, cwd: Path) -> subprocess.Popen:
    """``harness ARGS`` in a fresh process whose stdout reader has already gone away."""
    code = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "0"},
    )
    process.stdout.close()  # `| head` that has read what it wanted
    return process


@pytest.mark.parametrize("command", [["list", "methods"], ["results", "--runs-dir", str(LAKE_RUNS)]])
def test_a_closed_pipe_ends_the_command_quietly(command, tmp_path):
    process = harness_command(*command, cwd=tmp_path)
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == ""


def subparsers(parser: argparse.ArgumentParser, path: str = "harness"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from subparsers(sub, f"{path} {name}")


def test_every_command_explains_itself_and_each_argument():
    vague = []
    for path, parser in subparsers(build_parser()):
        if not parser.description:
            vague.append(path)
        vague += [
            f"{path} {a.option_strings or a.dest}"
            for a in parser._actions
            if a.help is None and not isinstance(a, argparse._SubParsersAction)
        ]
    assert vague == []


def test_data_actions_have_their_own_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("data", "prepare", "--help")
    help_text = capsys.readouterr().out
    assert exit_.value.code == 0 and help_text.startswith("usage: harness data prepare [-h] [--from DIR] [--force]")
    assert "linked into the data root" in help_text and "{status,verify,download,prepare}" not in help_text
    with pytest.raises(SystemExit):
        run_cli("data", "status", "--help")
    assert "--from" not in capsys.readouterr().out


def test_show_with_settings_but_no_benchmark_is_one_error(capsys):
    from conftest import one_error

    assert run_cli("show", "protonet", "--set", "train.steps=3") == 2
    assert "--bench" in one_error(capsys)


def test_ctrl_c_wrapped_by_an_import_is_an_interruption_not_a_traceback(monkeypatch, capsys):
    """Ctrl-C while a module is still importing can reach the command wrapped in a RuntimeError."""
    import harness.cli

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on '_lru_cache_wrapper' instance") from exc

    parser = harness.cli.build_parser()
    monkeypatch.setattr(harness.cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["site"].set_defaults(handler=interrupted_import)
    assert run_cli("site") == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_every_text_read_and_write_names_its_encoding():
    """With Python's UTF-8 mode off and a C locale, text I/O would use ASCII: the package names UTF-8 everywhere."""
    import ast

    root = Path(__file__).resolve().parents[1]
    unnamed = []
    for path in [p for folder in ("harness", "methods", "benchmarks") for p in (root / folder).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or "encoding" in {k.arg for k in node.keywords}:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            helper = isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "files"
            if name in ("read_text", "write_text") and not helper and isinstance(func, ast.Attribute):
                unnamed.append(f"{path.relative_to(root)}:{node.lineno}")
            elif name == "open" and getattr(
                func.value if isinstance(func, ast.Attribute) else None, "id", None
            ) not in ("Image", "os"):
                args = node.args if isinstance(func, ast.Name) else [None, *node.args]
                mode = next((k.value for k in node.keywords if k.arg == "mode"), args[1] if len(args) > 1 else None)
                if not (isinstance(mode, ast.Constant) and "b" in mode.value):
                    unnamed.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not unnamed, unnamed


def test_commands_work_with_utf8_mode_off_in_the_c_locale(tmp_path):
    env = {**os.environ, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C"}
    for command in (["list"], ["show", "bmssl"]):
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", *command], env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode("utf-8", "replace")
