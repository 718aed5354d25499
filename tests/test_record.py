"""The run record as a type (harness/record.py): every field any command writes is declared with its meaning,
fresh records name their schema version, `run` and `eval` records share one lifecycle and the same provenance
and terminal fields, and older records are read through the declared migrations."""

from __future__ import annotations

import json

import pytest

from harness.record import FIELDS, PROVENANCE, SCHEMA_VERSION, TERMINAL, migrate
from harness.store import read_record

from conftest import only_run, run_cli


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """An ok run, its eval on another benchmark, and a failed run."""
    root = tmp_path_factory.mktemp("records")
    tiny = ["--set", "train.steps=2", "--set", "bench.episodes=4", "--set", "train.val_episodes=4", "--no-progress"]
    assert run_cli("run", "--method", "protonet", "--bench", "synthetic-5w1s", *tiny, "--runs-dir", root / "run") == 0
    trained = only_run(root / "run")
    assert run_cli("eval", "--run", trained, "--bench", "synthetic-5w5s", "--runs-dir", root / "eval") == 0
    failing = ["--set", "train.lr=1e30", "--set", "train.log_every=1"]  # diverges at its first logged step
    assert (
        run_cli(
            "run", "--method", "protonet", "--bench", "synthetic-5w1s", *tiny, *failing, "--runs-dir", root / "failed"
        )
        != 0
    )
    return {name: read_record(only_run(root / name)) for name in ("run", "eval", "failed")}


def test_every_field_written_is_declared_and_fresh_records_name_their_schema(made):
    for name, record in made.items():
        undeclared = set(record) - set(FIELDS) - {"run_dir"}
        assert not undeclared, (name, undeclared)
        assert record["schema_version"] == SCHEMA_VERSION


def test_run_and_eval_records_have_the_same_provenance_and_terminal_fields(made):
    for name in ("run", "eval"):
        missing = [field for field in (*PROVENANCE, *TERMINAL) if field not in made[name]]
        assert not missing, (name, missing)
    assert made["eval"]["flops"]["eval"] > 0 and made["eval"]["wall_seconds"] > 0
    assert made["failed"]["status"] == "failed" and "diverged" in made["failed"]["reason"]
    assert all(field in made["failed"] for field in PROVENANCE)


def test_an_older_record_reads_through_the_declared_migrations(tmp_path):
    old = {"run_id": "r", "method": "pixels", "benchmark": "synthetic-5w1s", "seed": 0, "status": "ok"}
    assert migrate(dict(old))["kind"] == "train" and migrate(dict(old))["trained_on"] == "synthetic-5w1s"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text(json.dumps(old), encoding="utf-8")
    assert read_record(tmp_path / "r")["kind"] == "train"  # read, never rewritten
    assert "kind" not in json.loads((tmp_path / "r" / "result.json").read_text(encoding="utf-8"))
