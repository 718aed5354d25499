"""`harness reproduce` plans like `harness sweep`: data, spec and runs are checked before
anything is submitted, `--dry-run` says the same, and a worker's failure is one line naming its cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.reproduce import failure_causes
from harness.sweep.plan import Run
from harness.sweep.status import RunStatus

from conftest import one_error, run_cli
from test_evidence import tiny_spec

LAKE = Path(__file__).resolve().parents[1] / "results" / "tables" / "omniglot_lake.yaml"


@pytest.fixture
def no_data(tmp_path, monkeypatch) -> Path:
    """An empty data root and no mirror."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "empty-data"))
    monkeypatch.delenv("HARNESS_DATA_MIRROR", raising=False)
    return tmp_path / "empty-data"


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_reproduce_without_its_data_is_one_error_before_any_submission(no_data, tmp_path, monkeypatch, capsys, dry_run):
    import harness.sweep.submit

    monkeypatch.setattr(harness.sweep.submit, "submit", lambda *a, **k: pytest.fail("submitted"))
    assert run_cli("reproduce", LAKE, "--executor", "local", "--runs-dir", tmp_path / "again", *dry_run) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err and captured.out == "", captured
    assert lines[0].startswith("harness: error: cannot plan bmssl | small1, 20-way 1-shot seed 0: ")
    assert f"dataset omniglot-small1 is not present under {no_data}" in lines[0]
    assert "`harness data download omniglot-small1`" in lines[0]
    assert not (tmp_path / "again").exists()


def status(tmp_path: Path, label: str, record: dict | None, reason: str, log: str) -> RunStatus:
    run = Run(f"h{label}-s0", label, "pixels", "omniglot-small1-20w1s-lake", 0, {}, f"h{label}", str(tmp_path / label))
    return RunStatus(run, "failed", "STOPPED", "123", "", record, reason, log)


def test_a_failed_run_is_one_line_naming_its_cause(tmp_path):
    log = tmp_path / "123_0_log.err"
    log.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "harness: run failed: b seed 0: DataError: dataset omniglot-small1 is not present under /d\n"
        "submitit ERROR (...) - Submitted job triggered an exception\nRunFailed: 1 of 1 runs failed:\n"
    )
    causes = failure_causes(
        [
            status(
                tmp_path, "a", {"status": "failed", "reason": "RuntimeError: boom"}, "RuntimeError: boom\n  detail", ""
            ),
            status(tmp_path, "b seed 0", None, "job 123 ended STOPPED without a result", str(log)),
            status(tmp_path, "c", None, "job 123 ended CANCELLED without a result", str(tmp_path / "missing.err")),
        ]
    )
    assert causes == {
        "ha-s0": "RuntimeError: boom",
        "hb seed 0-s0": f"DataError: dataset omniglot-small1 is not present under /d (stderr: {log})",
        "hc-s0": f"job 123 ended CANCELLED without a result (stderr: {tmp_path / 'missing.err'})",
    }


def test_a_worker_failure_is_one_line_and_the_verdict_not_run(no_data, tmp_path, monkeypatch, capsys):
    """The data goes missing between planning and the worker (planning is told it is there): the worker's
    failure is one line naming its cause, not its traceback, and the run is NOT RUN (exit 1)."""
    import harness.resolve

    monkeypatch.setattr(harness.resolve, "check_data", lambda resolved, download=False: None)
    assert run_cli("reproduce", LAKE, "--only", "pixels", "--executor", "local", "--runs-dir", tmp_path / "again") == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if "failed" in line]
    assert len(failed) == 1 and "Traceback" not in captured.out + captured.err, captured
    assert failed[0].startswith(
        "harness: pixels | small1, 20-way 1-shot seed 0 failed: DataError: dataset omniglot-small1 is not present"
    )
    assert "NOT RUN" in captured.out and "accuracy" not in captured.out  # the spec's metric is error


def test_reproduce_with_negative_parallelism_claims_nothing(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tables")
    assert run_cli("reproduce", spec, "--parallelism", "-1", "--runs-dir", tmp_path / "again") == 2
    assert "--parallelism must be a positive integer" in one_error(capsys) and not (tmp_path / "again").exists()
