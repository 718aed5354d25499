"""Reports say what they compare: steps and FLOPs beside every entry, one method's configurations
as separate labelled entries, a changed benchmark protocol marked, the site's index within each spec's
filters; and paper tables that fit a paper: shared facts said once, per-row training columns, LaTeX that
compiles in a plain article, a .bib for every citation.

Runs are written as `harness run` writes them (tests/test_report.py's ``make_run``), on the registered
benchmark synthetic-5w1s where the protocol matters (its own: 5-way 1-shot, 15 queries, 2000 episodes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_report import BIBLIOGRAPHY, COUNTS, make_run, read_csv, write_spec

from harness.cli import main
from harness.errors import ConfigError
from harness.report.spec import load_spec
from harness.site import build_site
from harness.store import read_record, write_record

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = {"bench.queries": 15, "bench.episodes": 2000}  # synthetic-5w1s's own (ways and shots: make_run's)


def trained_run(
    runs: Path,
    method: str,
    seed: int,
    counts,
    steps: int,
    *,
    bench: str = "toy-5w1s",
    settings: dict | None = None,
    minute: int = 0,
) -> dict:
    """A run with ``steps`` in its config and record, and 1e9 FLOPs per step."""
    made = make_run(
        runs,
        method,
        bench,
        seed,
        counts,
        finished=f"2026-02-01T10:{minute:02d}:{seed:02d}+00:00",
        settings={"train.steps": steps, **(settings or {})},
    )
    record = {
        **read_record(Path(made["run_dir"])),
        "steps": steps,
        "flops": {"train": steps * 10**9, "eval": 10**8, "step": 10**9},
    }
    write_record(Path(made["run_dir"]), record)
    return record


@pytest.fixture
def unregistered_names(monkeypatch):
    """Specs here name the toy methods (meth-a, ...), which the registry check would refuse."""
    monkeypatch.setattr("harness.report.spec.check_names", lambda spec: None)


# ------------------------------------------------------------------------------------ leaderboards


def test_one_method_at_two_step_counts_is_two_labelled_entries_with_steps_and_flops(tmp_path, capsys):
    runs = tmp_path / "runs"
    short = [trained_run(runs, "meth-a", seed, COUNTS["meth-c"], 10) for seed in (0, 1)]
    long = trained_run(runs, "meth-a", 0, COUNTS["meth-a"], 200, minute=1)
    trained_run(runs, "meth-b", 0, COUNTS["meth-f"], 10, minute=2)
    out = tmp_path / "board.csv"
    assert main(["leaderboard", "--runs-dir", str(runs), "--out", str(out)]) == 0
    board = read_csv(out).set_index("label")
    assert list(board.index) == ["meth-a [train.steps=200]", "meth-a [train.steps=10]", "meth-b"]
    assert board["steps"].astype(str).to_dict() == {
        "meth-a [train.steps=200]": "200",
        "meth-a [train.steps=10]": "10",
        "meth-b": "10",
    }
    assert board.loc["meth-a [train.steps=200]", "train_flops"] == 200e9
    assert board.loc["meth-a [train.steps=200]", "runs"] == long["run_id"]
    assert board.loc["meth-a [train.steps=10]", "runs"] == " ".join(r["run_id"] for r in short)
    # ranked apart: the 10-step runs are one entry of two seeds, never seeds of the 200-step one
    assert board.loc["meth-a [train.steps=10]", "accuracy_pct"] == pytest.approx(10 * np.mean(COUNTS["meth-c"]))
    assert board.loc["meth-a [train.steps=200]", "accuracy_pct"] == pytest.approx(10 * np.mean(COUNTS["meth-a"]))
    assert board.loc["meth-a [train.steps=200]", "rank"] == 1 and board.loc["meth-a [train.steps=10]", "seeds"] == "0 1"

    assert main(["leaderboard", "--runs-dir", str(runs)]) == 0
    md = capsys.readouterr().out
    header = next(line for line in md.splitlines() if line.startswith("|   Rank"))
    assert [h.strip() for h in header.split("|")[1:-1]][4:7] == ["Seeds", "Steps", "Train FLOPs"]
    cells = {
        line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    assert cells["meth-a [train.steps=200]"][5:7] == ["200", "2.00e11"]
    assert cells["meth-a [train.steps=10]"][4:7] == ["2", "10", "1.00e10"]
    assert "meth-a: several configurations, each its own entry" in md
    assert "†" not in md  # toy-5w1s is not registered: no protocol to compare with, no mark


def test_a_changed_protocol_is_marked_with_the_keys_that_differ(tmp_path, capsys, unregistered_names):
    changed, kept = tmp_path / "changed", tmp_path / "kept"
    for runs, settings in ((changed, {"bench.queries": 5, "bench.episodes": 20}), (kept, PROTOCOL)):
        for i, method in enumerate(("meth-a", "meth-b")):
            trained_run(runs, method, 0, COUNTS[method], 10, bench="synthetic-5w1s", settings=settings, minute=i)
    assert main(["leaderboard", "--runs-dir", str(changed)]) == 0
    md = capsys.readouterr().out
    assert "## synthetic-5w1s†" in md
    note = next(line for line in md.splitlines() if line.startswith("- †"))
    assert "bench.queries=5 (the benchmark's 15), bench.episodes=20 (the benchmark's 2000)" in note
    assert "bench.ways" not in note and "bench.shots" not in note
    assert main(["leaderboard", "--runs-dir", str(kept)]) == 0
    assert "†" not in capsys.readouterr().out

    spec = write_spec(
        tmp_path / "tables",
        columns=[{"label": "1-shot", "benchmark": "synthetic-5w1s"}],
        references=[],
        rows=[{"label": "A", "method": "meth-a"}, {"label": "B", "method": "meth-b"}],
    )
    assert main(["table", str(spec), "--runs-dir", str(changed)]) == 0
    md = (tmp_path / "tables" / "toy.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Method", "1-shot†"]
    assert "- † " in md and "1-shot: bench.queries=5 (the benchmark's 15), bench.episodes=20" in md
    tex = (tmp_path / "tables" / "toy.tex").read_text()
    assert r"1-shot$^\dagger$" in tex
    frame = read_csv(tmp_path / "tables" / "toy.csv")
    assert set(frame["note"]) == {
        "protocol changed: bench.queries=5 (benchmark: 15), bench.episodes=20 (benchmark: 2000)"
    }


# ------------------------------------------------------------------------------------ site


def test_the_site_index_names_nothing_the_specs_filters_exclude(tmp_path):
    """A spec whose rows keep protonet's 30-step runs; its evidence also holds a better 200-step protonet run.
    Neither the index nor the ranked entries may name it."""
    runs = tmp_path / "results" / "runs" / "toy"
    kept = trained_run(runs, "protonet", 0, COUNTS["meth-c"], 30, bench="synthetic-5w1s")
    excluded = trained_run(runs, "protonet", 0, COUNTS["meth-a"], 200, bench="synthetic-5w1s", minute=1)
    trained_run(runs, "pixels", 0, COUNTS["meth-f"], 0, bench="synthetic-5w1s", minute=2)
    spec = tmp_path / "results" / "tables" / "toy.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        yaml.safe_dump(
            {
                "title": "Filtered",
                "columns": [{"label": "1-shot", "benchmark": "synthetic-5w1s"}],
                "rows": [
                    {"label": "ProtoNet", "method": "protonet", "where": {"train.steps": 30}},
                    {"label": "Pixels", "method": "pixels"},
                ],
            }
        )
    )
    build_site([spec], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    best = re.search(r"<td>([^<]*)</td><td class=\"num\">(\d+)</td></tr>", index)
    assert best.group(1) == f"protonet ({100 * kept['accuracy']:.2f}%)" and best.group(2) == "2"
    bench = (tmp_path / "site" / "bench" / "synthetic-5w1s.html").read_text()
    leaderboard = bench[bench.index("<h2>Leaderboard") : bench.index("<h2>Paper table")]
    for page in (index, leaderboard):
        assert excluded["run_id"] not in page and "train.steps=200" not in page
    assert "synthetic-5w1s†" in index and "bench.queries=2 (the benchmark&#x27;s 15)" in index  # make_run's protocol


# ------------------------------------------------------------------------------------ paper tables


def three_seed_store(runs: Path) -> None:
    """meth-a and meth-b with seeds 0-2 on toy-5w1s and toy-5w5s; meth-f (no training) with one run."""
    for seed in range(3):
        for i, (method, steps) in enumerate((("meth-a", 100), ("meth-b", 50))):
            for bench in ("toy-5w1s", "toy-5w5s"):
                trained_run(
                    runs, method, seed, COUNTS[method], steps + (bench == "toy-5w5s") * steps, bench=bench, minute=i
                )
    for bench in ("toy-5w1s", "toy-5w5s"):
        trained_run(runs, "meth-f", 0, COUNTS["meth-f"], 0, bench=bench, minute=5)


def test_a_fact_shared_by_every_cell_is_said_once_and_row_facts_are_columns(tmp_path, unregistered_names):
    runs = tmp_path / "runs"
    three_seed_store(runs)
    rows = [{"label": "A", "method": "meth-a"}, {"label": "B", "method": "meth-b"}, {"label": "F", "method": "meth-f"}]
    spec = write_spec(tmp_path / "tables", rows=rows, seeds="0-2")
    assert main(["table", str(spec), "--runs-dir", str(runs)]) == 0
    md = (tmp_path / "tables" / "toy.md").read_text()
    notes = md[md.index("Notes:") : md.index("Source runs")]
    assert notes.count("mean over 3 seeds (0, 1, 2)") == 1 and "A (1-shot): 3" not in notes
    assert "F (1-shot), F (5-shot), which do not train: one run" in notes
    assert "steps" not in md.lower()  # no column, and no prose of per-row facts

    spec = write_spec(tmp_path / "tables", rows=rows, seeds="0-2", training_columns=["steps", "flops", "seconds"])
    assert main(["table", str(spec), "--runs-dir", str(runs)]) == 0
    table = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in (tmp_path / "tables" / "toy.md").read_text().splitlines()
        if line.startswith("| ")
    }
    assert table["Method"][2:] == ["Steps", "Train GFLOPs", "Train time"]
    assert table["A"][2:] == ["100 / 200", "100 / 200", "12.5 s"]  # per column where they differ, once where shared
    assert table["F"][2:] == ["0", "0", "12.5 s"]
    frame = read_csv(tmp_path / "tables" / "toy.csv")
    assert frame.loc[(frame["row"] == "A") & (frame["column"] == "5-shot"), "train_flops"].item() == 200e9


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bibliography": {}}, "bibkey 'lake2015', which the spec's bibliography does not define"),
        (
            {"bibliography": {"lake2015": {**BIBLIOGRAPHY["lake2015"], "jornal": "x"}}},
            "unknown field 'jornal'; did you mean 'journal'",
        ),
        (
            {"bibliography": {"lake2015": {"type": "article", "author": "A", "title": "T", "year": 2015}}},
            "needs journal",
        ),
        ({"references": [{"label": "X", "citation": "Y", "bibkey": "a b", "values": {}}]}, "bibkey must be letters"),
        ({"training_columns": ["steps", "seconds", "flop"]}, "unknown column 'flop'; valid: steps, flops, seconds"),
        ({"latex_size": "tiny"}, "latex_size must be one of normalsize, small"),
    ],
)
def test_bibliography_and_table_option_errors_say_what_is_wrong(tmp_path, unregistered_names, change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_spec(write_spec(tmp_path, **change))


def pdflatex(folder: Path, tables: list[str], bib: str) -> str:
    """Compile ``tables`` (\\input) in a plain article with booktabs, with bibtex on ``bib``; returns the log."""
    if not (shutil.which("pdflatex") and shutil.which("bibtex")):
        pytest.skip("no pdflatex/bibtex on PATH (Debian: apt-get install -y texlive-latex-recommended; CI installs it)")
    (folder / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        + "".join(f"\\input{{{name}}}\n" for name in tables)
        + f"\\bibliographystyle{{plain}}\n\\bibliography{{{bib}}}\n\\end{{document}}\n"
    )
    latex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]
    for command in (latex, ["bibtex", "paper"], latex, latex):  # the last run has every citation resolved
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}"
        assert "didn't find a database entry" not in done.stdout, done.stdout
    return (folder / "paper.log").read_text(errors="replace")


def cited_keys(tex: str) -> set[str]:
    return {key.strip() for keys in re.findall(r"\\cite\{([^}]*)\}", tex) for key in keys.split(",")}


def bib_keys(bib: str) -> set[str]:
    return set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))


def test_the_table_latex_compiles_in_a_plain_article_with_its_bib(tmp_path, unregistered_names):
    runs = tmp_path / "runs"
    three_seed_store(runs)
    spec = write_spec(
        tmp_path / "tables",
        seeds="0-2",
        training_columns=["steps", "flops"],
        rows=[{"label": "A_1 & co", "method": "meth-a"}, {"label": "F", "method": "meth-f"}],
    )
    assert main(["table", str(spec), "--runs-dir", str(runs)]) == 0
    tex, bib = (tmp_path / "tables" / "toy.tex").read_text(), (tmp_path / "tables" / "toy.bib").read_text()
    assert cited_keys(tex) == {"lake2015"} == bib_keys(bib) and "cites entries of toy.bib" in tex
    assert "title = {Concepts \\& programs: 100\\% learned}" in bib and "pages = {1332--1338}" in bib
    assert "doi = {10.1126/science.aab3050}" in bib
    log = pdflatex(tmp_path / "tables", ["toy"], "toy")
    assert "undefined" not in log and "\\bibcite{lake2015}{1}" in (tmp_path / "tables" / "paper.aux").read_text()


def test_the_committed_tables_compile_fit_a_page_and_cite_only_their_bibs(tmp_path):
    folder = tmp_path / "paper"
    shutil.copytree(ROOT / "results" / "tables", folder)
    names = sorted(p.stem for p in folder.glob("*.tex"))
    entries: dict[
        str, str
    ] = {}  # a paper's one .bib: the tables' entries, a key shared by two tables identical in both
    for bib in sorted(folder.glob("*.bib")):
        for entry in [e.strip() for e in re.split(r"\n(?=@)", bib.read_text()) if e.startswith("@")]:
            (key,) = bib_keys(entry)
            assert entries.setdefault(key, entry) == entry, f"{key}: two tables' .bib files disagree"
    for name in names:
        assert cited_keys((folder / f"{name}.tex").read_text()) <= set(entries), name
    (folder / "references.bib").write_text("\n\n".join(entries.values()) + "\n")
    log = pdflatex(folder, names, "references")
    for problem in ("Overfull \\hbox", "Float too large", "multiply defined", "undefined"):
        assert problem not in log, f"{problem} compiling results/tables/*.tex in a plain article:\n{log[-3000:]}"
