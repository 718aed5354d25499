"""Budget ladders: a table spec's rungs multiply each learned row's step caps; `sweep --table`
plans one run per rung with its own schedule and skips finished ones; `harness table` writes every rung."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.report.spec import load_spec, rung_specs
from harness.store import RunStore
from harness.sweep.plan import table_runs

from conftest import run_cli
from test_evidence import tiny_spec

LADDER = [{"multiple": 2, "seeds": 0}, {"multiple": 3, "seeds": "0-1", "rows": ["protonet"]}]


def test_a_ladder_plans_one_run_per_rung_and_seed(tmp_path):
    spec = load_spec(tiny_spec(tmp_path, ladder=LADDER))
    planned = sorted((r.method, r.overrides.get("train.steps"), r.seed) for r in table_runs(spec))
    assert planned == [
        ("pixels", None, 0),
        ("protonet", 2, 0),
        ("protonet", 2, 1),
        ("protonet", 4, 0),
        ("protonet", 6, 0),
        ("protonet", 6, 1),
    ]
    x2, x3 = rung_specs(spec)
    assert (x2.multiple, x2.outputs["md"].name, [r.label for r in x2.rows]) == (2, "tiny-x2.md", ["protonet", "pixels"])
    assert x3.rows[0].where["train.steps"] == 6 and x3.rows[0].seeds == (0, 1)


def test_rows_and_rungs_choose_among_a_tables_runs(tmp_path, capsys):
    spec = load_spec(tiny_spec(tmp_path, ladder=LADDER))
    chosen = table_runs(spec, rows=["protonet"], rungs=[1, 3])
    assert sorted((r.method, r.overrides.get("train.steps"), r.seed) for r in chosen) == [
        ("protonet", 2, 0),
        ("protonet", 2, 1),
        ("protonet", 6, 0),
        ("protonet", 6, 1),
    ]
    with pytest.raises(ConfigError, match="did you mean 'protonet'"):
        table_runs(spec, rows=["protonett"])
    with pytest.raises(ConfigError, match="its rungs: 1, 2, 3"):
        table_runs(spec, rungs=[4])
    for args, message in [
        (["--table", spec.path, "--rungs", "x4"], "comma-separated whole multiples"),
        (["--methods", "protonet", "--rows", "protonet"], "use them with --table"),
    ]:
        assert run_cli("sweep", *args, "--runs-dir", tmp_path / "runs", "--dry-run") == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_rung_multiplies_training_length_only_not_the_steps_inside_one_step(tmp_path):
    rows = [
        {
            "label": "bmssl",
            "method": "bmssl",
            "where": {"train.steps": 2, "method.target_steps": 5, "method.inner_steps": 2},
        },
        {"label": "cactus", "method": "cactus-protonet", "where": {"train.steps": 2, "method.encoder_steps": 3}},
    ]
    (x4,) = rung_specs(load_spec(tiny_spec(tmp_path, rows=rows, ladder=[{"multiple": 4}])))
    assert [row.where for row in x4.rows] == [
        {"train.steps": 8, "method.target_steps": 5, "method.inner_steps": 2},
        {"train.steps": 8, "method.encoder_steps": 12},
    ]


@pytest.mark.parametrize(
    "ladder, message",
    [
        ([{"multiple": 1}], "from 2 to"),
        ([{"multiple": 2, "rows": ["protonett"]}], "did you mean 'protonet'"),
        ([{"multiple": 2, "rows": ["pixels"]}], "no step cap"),
        ([{"multiple": 2, "seed": 0}], "unknown key"),
    ],
)
def test_bad_ladders_are_one_clear_error(tmp_path, ladder, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(tiny_spec(tmp_path, ladder=ladder))


def test_sweep_table_makes_every_rung_once_and_table_writes_each(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path / "tables", ladder=LADDER, training_columns=["steps"])
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", "runs", "--wait") == 0
    records = [r for r in RunStore(tmp_path / "runs") if r["status"] == "ok"]
    assert sorted((r["method"], r["steps"], r["seed"]) for r in records) == [
        ("pixels", 0, 0),
        ("protonet", 2, 0),
        ("protonet", 2, 1),
        ("protonet", 4, 0),
        ("protonet", 6, 0),
        ("protonet", 6, 1),
    ]
    capsys.readouterr()
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", "runs", "--dry-run") == 0
    assert "0 to submit" in capsys.readouterr().out
    assert run_cli("table", spec, "--collect-from", "runs") == 0
    x3 = (tmp_path / "tables" / "tiny-x3.md").read_text()
    steps = {
        line.split("|")[1].strip(): line.split("|")[-2].strip() for line in x3.splitlines() if line.startswith("| ")
    }
    assert "3× the step caps" in x3 and steps["protonet"] == "6" and steps["pixels"] == "0"
    assert len([p for p in (tmp_path / "runs" / "tiny").iterdir() if p.is_dir()]) == 6  # every rung's evidence
    capsys.readouterr()  # a new machine with no runs directory: the committed evidence is not re-made
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", "fresh", "--dry-run") == 0
    assert "0 to submit, 6 already done" in capsys.readouterr().out
    assert run_cli("compare", spec, "protonet", "pixels", "--format", "md") == 0  # every rung, paired on episodes
    header, _, *body = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines()[1:]]
    table = [dict(zip(map(str.strip, header), map(str.strip, line))) for line in body]
    assert [(r["rung"], r["A steps"], r["A seeds"], r["B steps"]) for r in table] == [
        ("1", "2", "0,1", "0"),
        ("2", "4", "0", "0"),
        ("3", "6", "0,1", "0"),
    ]
    assert all(0 <= float(r["Wilcoxon p"]) <= 1 for r in table)
    assert run_cli("compare", spec, "protonet", "protonett") == 2
    assert "no row labelled 'protonett'" in capsys.readouterr().err


def test_the_compute_plot_draws_every_rung_against_training_flops(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(
        tmp_path / "tables",
        ladder=LADDER,
        plots=[{"kind": "compute", "benchmarks": ["synthetic-5w1s"], "out": "compute-tiny"}],
    )
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", "runs", "--wait") == 0
    assert run_cli("table", spec, "--runs-dir", "runs") == 0
    points = pd.read_csv(tmp_path / "tables" / "compute-tiny.csv")
    protonet = points[points["row"] == "protonet"].sort_values("multiple")
    assert list(protonet["multiple"]) == [1, 2, 3]
    assert protonet["train_flops"].is_monotonic_increasing and protonet["train_flops"].iloc[0] > 0
    assert list(protonet["seeds"]) == ["0 1", "0", "0 1"]
    assert points[points["row"] == "pixels"]["train_flops"].tolist() == [0.0]
    assert (tmp_path / "tables" / "compute-tiny.png").stat().st_size > 0
