"""Input bombs and silent YAML: every YAML input (run configs, table specs, sweep files,
benchmark files, tune spaces) is read by one strict reader: an alias bomb, a duplicate key or an oversized
file is one error naming the file (and line), a tune grid is counted before it is made, and messages
quoting huge values are cut."""

from __future__ import annotations

import pytest

from conftest import run_cli

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def inputs(tmp_path, text: str) -> list[list[str]]:
    """Commands that read ``text`` as each kind of YAML input."""
    path = tmp_path / "input.yaml"
    path.write_text(text)
    return [
        ["run", "--method", "pixels", "--bench", "synthetic-5w1s", "--config", path, "--runs-dir", tmp_path / "r"],
        ["table", path],
        ["sweep", path, "--dry-run", "--runs-dir", tmp_path / "r"],
        ["run", "--method", "pixels", "--bench", path, "--runs-dir", tmp_path / "r"],
        [
            "tune",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--space",
            path,
            "--trials",
            "1",
            "--budget-minutes",
            "1",
            "--runs-dir",
            tmp_path / "r",
        ],
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        (BOMB, "expands to more than 100,000 values"),
        (
            "train:\n  steps: 5\nseeds: 1\ntrain:\n  lr: 0.1\n",
            "line 4: key 'train' is given twice \\(first on line 1\\)",
        ),
        ("x: " + "y" * 1_000_001 + "\n", "YAML inputs are at most"),
    ],
)
def test_every_yaml_input_refuses_bombs_duplicates_and_huge_files(tmp_path, capsys, text, message):
    import re

    for command in inputs(tmp_path, text):
        assert run_cli(*command) == 2, command
        err = capsys.readouterr().err
        assert re.search(message, err) and err.count("harness: error") == 1, (command, err[:300])
        assert len(err) < 2200
    assert not (tmp_path / "r").exists()


def test_a_tune_grid_is_counted_before_it_is_made(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("".join(f"train.k{i}: [{', '.join(map(str, range(40)))}]\n" for i in range(8)))
    assert (
        run_cli(
            "tune",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--space",
            space,
            "--trials",
            "1",
            "--budget-minutes",
            "1",
            "--runs-dir",
            tmp_path / "r",
        )
        == 2
    )
    assert "6,553,600,000,000 points" in capsys.readouterr().err
