"""Data loss: a command replaces or deletes only what it made. Evidence and site folders are
marked by their maker (``files.OWNER_MARK``); any other non-empty target, a file, or one folder named by
two specs is one error, and the victim is hashed before and after to show nothing changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from harness import files

from conftest import run_cli
from test_evidence import tiny_spec


def digest(path: Path) -> str:
    """Every file's relative path and bytes under ``path`` (or the file itself)."""
    h = hashlib.sha256()
    items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in items:
        h.update(str(item.relative_to(path.parent)).encode() + b"\0" + item.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Finished runs of the tiny spec (protonet × 2 seeds, pixels) in ``runs``."""
    root = tmp_path_factory.mktemp("owned")
    spec = tiny_spec(root / "tables")
    assert run_cli("sweep", "--table", spec, "--executor", "local", "--runs-dir", root / "runs", "--wait") == 0
    return root


def users_folder(path: Path) -> Path:
    (path / "thesis").mkdir(parents=True)
    (path / "thesis" / "chapter1.tex").write_text("\\chapter{One}")
    return path


@pytest.mark.parametrize("evidence", ["../thesis", "../runs", "../tables"])
def test_collect_refuses_an_evidence_folder_it_did_not_make(made, tmp_path, evidence, capsys):
    """A user's folder, the runs directory collected from, the spec's own folder: each unchanged."""
    users_folder(made) if not (made / "thesis").exists() else None
    spec = tiny_spec(made / "tables", evidence=evidence)
    victim = (made / "tables" / evidence).resolve()
    before = digest(victim)
    assert run_cli("table", spec, "--collect-from", made / "runs") == 2
    err = capsys.readouterr().err
    assert f"{victim}" in err and "not a folder `harness table" in err and err.count("harness: error") == 1
    assert digest(victim) == before


def test_collect_writes_its_own_folder_again_and_two_specs_cannot_share_one(made, tmp_path, capsys):
    spec = tiny_spec(made / "tables", evidence="../ev-tiny")
    assert run_cli("table", spec, "--collect-from", made / "runs") == 0
    evidence = made / "ev-tiny"
    assert (evidence / files.OWNER_MARK).is_file() and len([p for p in evidence.iterdir() if p.is_dir()]) == 3
    assert run_cli("table", spec, "--collect-from", made / "runs") == 0  # its own: replaced
    other = made / "tables" / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "outputs": {"md": "other.md"}}))
    before = digest(evidence)
    capsys.readouterr()
    assert run_cli("table", other, "--collect-from", made / "runs") == 2  # spec other: not its folder
    assert "made by `harness table ../tables/tiny.yaml`" in capsys.readouterr().err
    assert digest(evidence) == before


def test_two_specs_naming_one_new_evidence_folder_in_one_command_are_refused(made, capsys):
    first = tiny_spec(made / "pair", evidence="../shared-ev")
    second = made / "pair" / "second.yaml"
    second.write_text(yaml.safe_dump({**yaml.safe_load(first.read_text()), "outputs": {"md": "second.md"}}))
    assert run_cli("table", first, second, "--collect-from", made / "runs") == 2
    assert "written twice" in capsys.readouterr().err
    assert not (made / "shared-ev").exists() and not (made / "pair" / "tiny.md").exists()


@pytest.mark.parametrize("target", ["results", "docs", "report.txt", "."])
def test_site_out_refuses_a_target_it_did_not_make(made, tmp_path, monkeypatch, target, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "spec.yaml").write_text("committed")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("mine")
    (tmp_path / "report.txt").write_text("a report")
    spec = tiny_spec(made / "tables", evidence="../ev-site")
    assert run_cli("table", spec, "--collect-from", made / "runs") == 0
    before = digest(tmp_path)
    assert run_cli("site", spec, "--out", target) == 2
    assert capsys.readouterr().err.count("harness: error") == 1
    assert digest(tmp_path) == before  # nothing replaced, no .part left behind
    assert run_cli("site", spec, "--out", "site") == 0 and run_cli("site", spec, "--out", "site") == 0  # its own


def test_run_dir_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my own settings\n")
    before = digest(folder)
    assert (
        run_cli(
            "run", "--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.episodes=5", "--run-dir", folder
        )
        == 2
    )
    assert "not a run directory" in capsys.readouterr().err
    assert digest(folder) == before
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=5",
            "--run-dir",
            tmp_path / "empty-ok",
        )
        == 0
    )


def test_a_killed_write_leaves_nothing_the_next_write_keeps(made, tmp_path):
    """What a kill during `table --collect-from` or `site` leaves (.part temporaries, a .old folder) is
    cleared by the next write of the same output."""
    spec = tiny_spec(made / "tables", evidence="../ev-litter")
    tables = made / "tables"
    (tables / ".tiny.md.abcd1234.part").write_text("half a table")
    (tables / ".tiny.tex.k2_9x.part").write_text("a temporary of another name length")
    (tables / ".tiny.tex.notes.txt.part").write_text("not a temporary of tiny.tex: kept")
    (made / ".ev-litter.abcd1234.part").mkdir()
    (made / ".ev-litter.old").mkdir()
    assert run_cli("table", spec, "--collect-from", made / "runs") == 0
    assert not list(tables.glob(".tiny.md.*")) and not list(made.glob(".ev-litter*"))
    assert [p.name for p in tables.glob(".tiny.tex.*")] == [".tiny.tex.notes.txt.part"]
    (tmp_path / ".site.abcd1234.part").mkdir()
    assert run_cli("site", spec, "--out", tmp_path / "site") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
