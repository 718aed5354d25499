"""Leaderboards, paper tables and plots (harness.report) on run records the tests write themselves.

The store: benchmark toy-5w1s (30 episodes × 10 queries) with six single-seed methods whose
per-episode results were chosen so that Holm's correction decides one tie, a failed run and an
older duplicate that would be best if it counted; toy-5w5s with a three-seed method and a missing
cell; toy-scarce with one method at three training fractions.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from harness.cli import main
from harness.errors import ConfigError, HarnessError
from harness.methods import METHODS
from harness.report.leaderboard import build_boards
from harness.report.selection import Store, read_settings
from harness.report.spec import load_spec
from harness.report.stats import holm, paired_test
from harness.report.tables import build_table
from harness.settings import stored_hash
from harness.store import TRAIN_LOG, RunStore, write_config, write_record, write_scores

from conftest import one_error, run_cli

QUERIES = 10


@pytest.fixture(autouse=True)
def toy_names(monkeypatch):
    """The toy store's methods and benchmarks (meth-a, toy-5w1s, ...) are deliberately not registered:
    specs here skip the registry check, which tests/test_evidence.py covers."""
    monkeypatch.setattr("harness.report.spec.check_names", lambda spec: None)


# Correct answers (of 10) per episode. A is best; B is clearly tied; C is significantly worse than
# A before Holm's correction but not after; D and E tie with each other well below A; F is last.
COUNTS = {
    "meth-a": [7, 8, 6, 9, 7, 8, 7, 6, 8, 9, 7, 8, 6, 7, 8, 9, 7, 6, 8, 7, 8, 7, 9, 6, 8, 7, 8, 7, 6, 8],
    "meth-b": [7, 8, 7, 9, 6, 7, 7, 6, 8, 9, 6, 8, 5, 7, 8, 9, 7, 6, 8, 6, 7, 7, 9, 5, 8, 8, 9, 7, 6, 9],
    "meth-c": [7, 7, 5, 9, 8, 9, 5, 6, 8, 8, 6, 7, 5, 8, 7, 8, 5, 4, 8, 6, 9, 7, 10, 6, 8, 8, 6, 7, 6, 7],
    "meth-d": [4, 4, 2, 7, 3, 6, 4, 3, 6, 7, 4, 5, 4, 4, 5, 7, 5, 2, 5, 5, 4, 4, 6, 2, 6, 5, 5, 5, 2, 5],
    "meth-e": [3, 4, 1, 8, 4, 5, 5, 3, 6, 8, 5, 6, 4, 4, 5, 8, 5, 1, 5, 5, 4, 4, 6, 2, 6, 4, 6, 5, 1, 4],
    "meth-f": [1, 3, 0, 4, 0, 1, 1, 1, 1, 4, 0, 3, 0, 2, 1, 3, 0, 1, 2, 2, 2, 1, 3, 1, 2, 2, 1, 1, 0, 3],
}
SHIFTS_5W5S = {0: 1, 1: 2, 2: 0}  # meth-a's three seeds on toy-5w5s: COUNTS + shift (capped at 10)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
_made = {"n": 0}


def make_run(
    runs_dir: Path,
    method: str,
    bench: str,
    seed: int,
    counts,
    *,
    finished: str,
    status: str = "ok",
    digest: str | None = None,
    shots: int = 1,
    settings: dict | None = None,
    reason: str | None = None,
    train_log: list[dict] | None = None,
    dirty: bool = False,
) -> dict:
    """Write one run like `harness run` does: config.yaml, result.json, episodes.csv, trials.npy."""
    _made["n"] += 1
    tree = {
        "method_name": method,
        "benchmark": bench,
        "bench": {"ways": 5, "shots": shots, "queries": 2, "episodes": 30, "episode_seed": 0},
        "data": {
            "root": "/somewhere/else",
            "train_fraction": 1.0,
            "image_size": 28,
            "class_rotations": False,
            "holdout": "",
        },
        "train": {"steps": 100, "lr": 0.001},
        "eval": {"head": "prototype", "distance": "euclidean", "batch_size": 512},
        "method": {},
    }
    for key, value in (settings or {}).items():
        group, _, name = key.partition(".")
        tree.setdefault(group, {})[name] = value
    if method in METHODS:  # a registered method's record carries the hash of its stored tree, as a run's does
        config_hash = stored_hash(tree)
    else:
        config_hash = hashlib.sha256(json.dumps([method, bench, settings or {}], sort_keys=True).encode()).hexdigest()[
            :12
        ]
    stamp = finished[:19].replace("-", "").replace(":", "").replace("T", "-")
    run_id = f"{stamp}-{method}-{bench}-s{seed}-{config_hash[:8]}-{_made['n']:04d}"
    run_dir = runs_dir / run_id
    write_config(run_dir, tree)
    record = {
        "run_id": run_id,
        "kind": "train",
        "method": method,
        "benchmark": bench,
        "trained_on": bench,
        "seed": seed,
        "config_hash": config_hash,
        "head": "prototype",
        "distance": "euclidean",
        "status": status,
        "reason": reason,
        "started": finished,
        "finished": finished,
        "device": "cpu: test",
        "host": "test",
        "command": "harness run",
        "versions": {},
        "git": {"commit": COMMIT, "dirty": dirty},
        "train_seconds": 12.5,
        "steps": tree["train"]["steps"],
        "val_accuracy": None,
        "peak_memory_mb": 300.0,
    }
    if status == "ok":
        counts = np.asarray(counts)
        correct = np.arange(QUERIES)[None, :] < counts[:, None]
        accuracies = correct.mean(axis=1)
        write_scores(run_dir, accuracies, correct)
        record.update(
            accuracy=float(accuracies.mean()),
            error=float(1 - accuracies.mean()),
            ci95=float(1.96 * accuracies.std(ddof=1) / math.sqrt(len(accuracies))),
            episodes=len(accuracies),
            queries_per_episode=QUERIES,
            episode_digest=digest or f"digest-{bench}",
            eval_seconds=0.1,
        )
    if train_log:
        pd.DataFrame(train_log).to_csv(run_dir / TRAIN_LOG, index=False)
    write_record(run_dir, record)
    return {**record, "run_dir": str(run_dir)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """The shared runs directory; returns the records made, by name."""
    runs = tmp_path_factory.mktemp("store") / "runs"
    made = {"runs_dir": runs}
    # The older duplicate of meth-b seed 0 scores 100%: it must be ignored, the newer run counts.
    made["b-old"] = make_run(runs, "meth-b", "toy-5w1s", 0, [10] * 30, finished="2026-01-01T09:00:00+00:00")
    log = [
        {"step": s, "seconds": s / 10, "lr": 0.001, "loss": 2.0 / s, "val_accuracy": None if s < 30 else 0.5}
        for s in (10, 20, 30)
    ]
    for i, (method, counts) in enumerate(COUNTS.items()):
        made[method] = make_run(
            runs,
            method,
            "toy-5w1s",
            0,
            counts,
            finished=f"2026-01-02T10:00:0{i}+00:00",
            train_log=log if method == "meth-a" else None,
            dirty=method == "meth-f",
        )
    made["g-failed"] = make_run(
        runs,
        "meth-g",
        "toy-5w1s",
        0,
        None,
        status="failed",
        finished="2026-01-02T11:00:00+00:00",
        reason="RunFailed: training diverged at step 7: loss=nan; lower train.lr",
    )
    for seed, shift in SHIFTS_5W5S.items():
        made[f"a5-s{seed}"] = make_run(
            runs,
            "meth-a",
            "toy-5w5s",
            seed,
            np.minimum(np.add(COUNTS["meth-a"], shift), 10),
            shots=5,
            finished=f"2026-01-03T10:00:0{seed}+00:00",
        )
    made["b5"] = make_run(
        runs,
        "meth-b",
        "toy-5w5s",
        0,
        np.minimum(np.add(COUNTS["meth-b"], 1), 10),
        shots=5,
        finished="2026-01-03T10:00:05+00:00",
    )
    for i, fraction in enumerate((0.25, 0.5, 1.0)):
        made[f"scarce-{fraction}"] = make_run(
            runs,
            "meth-a",
            "toy-scarce",
            0,
            np.subtract(COUNTS["meth-a"], 2 - i),
            settings={"data.train_fraction": fraction},
            finished=f"2026-01-04T10:00:0{i}+00:00",
        )
    made["scarce-b"] = make_run(runs, "meth-b", "toy-scarce", 0, COUNTS["meth-b"], finished="2026-01-04T10:00:09+00:00")
    return made


def hand_wilcoxon(a_counts, b_counts) -> float:
    """The two-sided Wilcoxon signed-rank p-value of per-episode accuracies, scipy directly (Pratt's
    zero handling), differences formed from the integer counts so that equal differences tie."""
    diff = (np.asarray(a_counts) - np.asarray(b_counts)) / QUERIES
    return float(stats.wilcoxon(diff, zero_method="pratt").pvalue)


def hand_holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm by its definition: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    names = sorted(p_values, key=p_values.get)
    m, adjusted, running = len(names), {}, 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        adjusted[name] = running
    return adjusted


def cli_error(capsys, *args) -> str:
    """Run the CLI expecting a user error: exit code 2 and the message on stderr."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") or "\nharness: error: " in err
    return err


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def leaderboard_csv(store, tmp_path, bench: str, *extra: str) -> pd.DataFrame:
    out = tmp_path / f"{bench}.csv"
    assert main(["leaderboard", "--bench", bench, "--runs-dir", str(store["runs_dir"]), "--out", str(out), *extra]) == 0
    return read_csv(out).set_index("label")


# ------------------------------------------------------------------------------------ statistics


def test_mcnemar_is_the_exact_binomial_test_on_discordant_trials():
    a = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 1]], bool)
    b = np.array([[1, 0, 0, 1, 1], [0, 0, 1, 0, 1], [1, 0, 0, 0, 1]], bool)
    a_only, b_only = 5, 1  # trials only A got right / only B got right
    n = a_only + b_only
    p_by_hand = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n)
    result = paired_test(a, b, "mcnemar")
    assert (result.a_better, result.b_better, result.pairs) == (a_only, b_only, 15)
    assert result.p_value == pytest.approx(p_by_hand)
    assert "McNemar" in result.summary() and "15 paired trials" in result.summary()
    assert paired_test(a, a, "mcnemar").p_value == 1.0
    assert paired_test(np.full(8, 0.5), np.full(8, 0.5)).p_value == 1.0


def test_paired_test_refuses_results_on_different_episodes():
    with pytest.raises(HarnessError, match="same episodes"):
        paired_test(np.zeros(5), np.zeros(6))


def test_holm_matches_its_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# ------------------------------------------------------------------------------------ leaderboards


def test_leaderboard_ties_follow_a_hand_computed_paired_test_with_holm(store, tmp_path):
    board = leaderboard_csv(store, tmp_path, "toy-5w1s")
    accuracy = {m: 100 * np.mean(c) / QUERIES for m, c in COUNTS.items()}
    raw = {m: hand_wilcoxon(COUNTS["meth-a"], c) for m, c in COUNTS.items() if m != "meth-a"}
    adjusted = hand_holm(raw)
    # The data exercise Holm: C is significant alone (raw p < 0.05) but not after the correction.
    assert raw["meth-c"] < 0.05 <= adjusted["meth-c"]
    assert adjusted["meth-b"] >= 0.05 and all(adjusted[m] < 0.05 for m in ("meth-d", "meth-e", "meth-f"))
    tied = {m for m, p in adjusted.items() if p >= 0.05}
    assert tied == {"meth-b", "meth-c"}
    # Round two among D, E, F: the better of D and E leads; the other is tied with it; F is not.
    leader = max(("meth-d", "meth-e"), key=accuracy.get)
    other = ({"meth-d", "meth-e"} - {leader}).pop()
    second = hand_holm({m: hand_wilcoxon(COUNTS[leader], COUNTS[m]) for m in (other, "meth-f")})
    assert second[other] >= 0.05 > second["meth-f"]

    assert list(board.index) == ["meth-a", "meth-b", "meth-c", leader, other, "meth-f"]
    assert board["rank"].to_dict() == {"meth-a": 1, "meth-b": 1, "meth-c": 1, leader: 4, other: 4, "meth-f": 6}
    assert board["mark"].fillna("").to_dict() == {
        "meth-a": "best",
        "meth-b": "tie",
        "meth-c": "tie",
        leader: "",
        other: "",
        "meth-f": "",
    }
    for method, p in adjusted.items():
        assert board.loc[method, "p_vs_best_holm"] == pytest.approx(p, abs=1e-6)
    for method in COUNTS:
        assert board.loc[method, "accuracy_pct"] == pytest.approx(accuracy[method], abs=1e-4)


def test_duplicates_newest_ok_counts_and_failed_runs_are_noted(store, tmp_path):
    board = leaderboard_csv(store, tmp_path, "toy-5w1s")
    assert board.loc["meth-b", "runs"] == store["meth-b"]["run_id"]
    assert board.loc["meth-b", "accuracy_pct"] == pytest.approx(100 * np.mean(COUNTS["meth-b"]) / QUERIES, abs=1e-4)
    assert "meth-g" not in board.index
    md = tmp_path / "board.md"
    main(["leaderboard", "--bench", "toy-5w1s", "--runs-dir", str(store["runs_dir"]), "--out", str(md)])
    text = md.read_text()
    excluded = next(line for line in text.splitlines() if line.startswith("- Excluded"))
    assert store["g-failed"]["run_id"] in excluded and "training diverged at step 7" in excluded
    ignored = next(line for line in text.splitlines() if "newest counts" in line)
    assert store["b-old"]["run_id"] in ignored
    sources = next(line for line in text.splitlines() if line.startswith("- Source runs"))
    assert store["b-old"]["run_id"] not in sources and store["meth-b"]["run_id"] in sources
    assert f"{COMMIT[:12]}+dirty" in sources and "**74.00 ± " in text  # meth-f was made from a dirty tree


def test_several_seeds_mean_and_ci_across_seeds_paired_on_seed_averaged_episodes(store, tmp_path, capsys):
    board = leaderboard_csv(store, tmp_path, "toy-5w5s")
    seeds = [np.minimum(np.add(COUNTS["meth-a"], s), 10) for s in SHIFTS_5W5S.values()]
    per_seed = [100 * np.mean(c) / QUERIES for c in seeds]
    assert board.loc["meth-a", "seeds"] == "0 1 2"
    assert board.loc["meth-a", "accuracy_pct"] == pytest.approx(np.mean(per_seed), abs=1e-4)
    assert board.loc["meth-a", "ci95_pct"] == pytest.approx(1.96 * np.std(per_seed, ddof=1) / math.sqrt(3), abs=1e-4)
    b = np.minimum(np.add(COUNTS["meth-b"], 1), 10)
    # Pairs: meth-a's per-episode accuracy averaged over its seeds against meth-b's (integers: exact zeros).
    p = float(stats.wilcoxon((np.sum(seeds, axis=0) - 3 * b) / (3 * QUERIES), zero_method="pratt").pvalue)
    assert board.loc["meth-b", "p_vs_best_holm"] == pytest.approx(p, abs=1e-6)
    err = cli_error(
        capsys,
        "leaderboard",
        "--bench",
        "toy-5w5s",
        "--runs-dir",
        store["runs_dir"],
        "--test",
        "mcnemar",
        "--out",
        tmp_path / "x.md",
    )
    assert "McNemar" in err and "3 seeds" in err and not (tmp_path / "x.md").exists()


def test_configs_of_one_method_are_labelled_by_the_settings_that_differ(store, tmp_path):
    board = leaderboard_csv(store, tmp_path, "toy-scarce")
    assert sorted(board.index) == [
        "meth-a [data.train_fraction=0.25]",
        "meth-a [data.train_fraction=0.5]",
        "meth-a [data.train_fraction=1.0]",
        "meth-b",
    ]


def test_digest_mismatch_is_an_error_naming_both_digests(tmp_path, capsys):
    runs = tmp_path / "runs"
    first = make_run(
        runs, "meth-a", "toy-5w1s", 0, COUNTS["meth-a"], digest="aaaa1111", finished="2026-01-01T00:00:00+00:00"
    )
    second = make_run(
        runs,
        "meth-b",
        "toy-5w1s",
        0,
        COUNTS["meth-b"],
        digest="bbbb2222",
        finished="2026-01-01T00:00:01+00:00",
        settings={"data.image_size": 84},
    )
    message = cli_error(capsys, "leaderboard", "--runs-dir", runs)
    for text in ("aaaa1111", "bbbb2222", first["run_id"], second["run_id"], "data.image_size (28 vs 84)"):
        assert text in message
    spec = tmp_path / "t.yaml"
    spec.write_text(
        yaml.safe_dump({"columns": [{"benchmark": "toy-5w1s"}], "rows": [{"method": "meth-a"}, {"method": "meth-b"}]})
    )
    message = cli_error(capsys, "table", spec, "--runs-dir", runs)
    assert "aaaa1111" in message and "bbbb2222" in message and not (tmp_path / "t.md").exists()


# ------------------------------------------------------------------------------------ tables

REFERENCES = [
    {"label": "Humans", "citation": "Lake et al. 2015", "bibkey": "lake2015", "values": {"1-shot": 4.5}},
    {"label": "Deep convnet", "citation": "Lake et al. 2015", "values": {"1-shot": 24.0, "5-shot": 13.25}},
]


BIBLIOGRAPHY = {
    "lake2015": {
        "type": "article",
        "author": "Lake, Brenden M. and Salakhutdinov, Ruslan",
        "title": "Concepts & programs: 100% learned",
        "journal": "Science",
        "volume": 350,
        "pages": "1332–1338",
        "year": 2015,
        "doi": "10.1126/science.aab3050",
    }
}


def write_spec(folder: Path, **extra) -> Path:
    spec = {
        "title": "Toy error & friends",
        "metric": "error",
        "columns": [{"label": "1-shot", "benchmark": "toy-5w1s"}, {"label": "5-shot", "benchmark": "toy-5w5s"}],
        "rows": [
            {"label": "A", "method": "meth-a"},
            {"label": "B", "method": "meth-b"},
            {"label": "C_1", "method": "meth-c"},
            {"label": "G", "method": "meth-g"},
        ],
        "references": REFERENCES,
        "bibliography": BIBLIOGRAPHY,
        "notes": ["Toy data."],
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def error_cell(counts_by_seed: list, decimals: int = 1) -> str:
    errors = [100 - 100 * np.mean(c) / QUERIES for c in counts_by_seed]
    if len(errors) == 1:
        acc = np.divide(counts_by_seed[0], QUERIES)
        ci = 100 * 1.96 * np.std(acc, ddof=1) / math.sqrt(len(acc))
    else:
        ci = 1.96 * np.std(errors, ddof=1) / math.sqrt(len(errors))
    return f"{np.mean(errors):.{decimals}f} ± {ci:.{decimals}f}"


def test_table_markdown_marks_best_and_ties_and_quotes_references(store, tmp_path):
    spec = write_spec(tmp_path / "tables")
    assert main(["table", str(spec), "--runs-dir", str(store["runs_dir"])]) == 0
    md = (tmp_path / "tables" / "toy.md").read_text()
    a5 = [np.minimum(np.add(COUNTS["meth-a"], s), 10) for s in SHIFTS_5W5S.values()]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    assert rows["A"] == [f"**{error_cell([COUNTS['meth-a']])}**", f"**{error_cell(a5)}**"]
    assert rows["B"][0] == f"<u>{error_cell([COUNTS['meth-b']])}</u>"
    assert rows["C_1"] == [f"<u>{error_cell([COUNTS['meth-c']])}</u>", "—"]  # missing cell
    assert rows["G"] == ["—", "—"]  # only a failed run
    quoted = md[md.index("Published results (quoted, not measured, not ranked)") :]
    assert "| Humans " in quoted and "| Lake et al. 2015 " in quoted and "24.0" in quoted and "13.25" in quoted
    assert "**4.5**" not in md and "Humans" not in md[: md.index("Published results")]
    assert "Wilcoxon signed-rank" in md and "Holm" in md and "Toy data." in md
    assert store["g-failed"]["run_id"] in md and "training diverged" in md


def test_table_latex_uses_booktabs_bold_underline_and_escapes(store, tmp_path):
    spec = write_spec(tmp_path / "tables")
    main(["table", str(spec), "--runs-dir", str(store["runs_dir"])])
    tex = (tmp_path / "tables" / "toy.tex").read_text()
    lines = tex.splitlines()
    rules = [lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")]
    assert rules == sorted(rules) and tex.count(r"\midrule") == 2  # header rule and the quoted block's rule
    assert r"\begin{tabular}{lcc}" in tex and r"\caption{Toy error \& friends}" in tex
    a5 = [np.minimum(np.add(COUNTS["meth-a"], s), 10) for s in SHIFTS_5W5S.values()]
    cells = [error_cell(counts).replace("±", r"$\pm$") for counts in ([COUNTS["meth-a"]], a5)]
    assert f"A & \\textbf{{{cells[0]}}} & \\textbf{{{cells[1]}}} \\\\" in lines
    assert next(line for line in lines if line.startswith(r"C\_1 & ")).startswith(r"C\_1 & \underline{")
    assert next(line for line in lines if line.startswith("B & ")).startswith(r"B & \underline{")
    assert r"\emph{Published results (quoted, not measured, not ranked)}" in tex
    assert (
        r"Humans~\cite{lake2015} & 4.5 & --- \\" in tex and r"Deep convnet (Lake et al. 2015) & 24.0 & 13.25 \\" in tex
    )
    comments = [line for line in lines if line.startswith("%")]
    assert any(store["meth-a"]["run_id"] in line and COMMIT[:12] in line for line in comments)
    assert any(store["g-failed"]["run_id"] in line for line in comments)


def test_table_rows_print_under_their_blocks(store, tmp_path):
    rows = [
        {"label": "A", "method": "meth-a", "block": "meta & learning"},
        {"label": "B", "method": "meth-b", "block": "meta & learning"},
        {"label": "C_1", "method": "meth-c", "block": "self-supervised"},
    ]
    spec = write_spec(tmp_path / "tables", rows=rows)
    assert main(["table", str(spec), "--runs-dir", str(store["runs_dir"])]) == 0
    md = [
        line.split("|")[1].strip()
        for line in (tmp_path / "tables" / "toy.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    assert md[:6] == ["Method", "*meta & learning*", "A", "B", "*self-supervised*", "C_1"]
    tex = (tmp_path / "tables" / "toy.tex").read_text().splitlines()
    first = tex.index(r"\multicolumn{3}{l}{\emph{meta \& learning}} " + "\\\\")
    assert tex[first - 1] == r"\midrule" and tex[first + 1].startswith("A & ")
    assert r"\midrule\multicolumn{3}{l}{\emph{self-supervised}} " + "\\\\" in tex
    frame = read_csv(tmp_path / "tables" / "toy.csv")
    assert dict(zip(frame["row"], frame["block"].fillna(""))) == {
        "A": "meta & learning",
        "B": "meta & learning",
        "C_1": "self-supervised",
        **{r: "" for r in ("Humans", "Deep convnet")},
    }


def test_table_csv_has_plain_numbers_marks_and_kinds(store, tmp_path):
    spec = write_spec(tmp_path / "tables")
    main(["table", str(spec), "--runs-dir", str(store["runs_dir"])])
    frame = read_csv(tmp_path / "tables" / "toy.csv")
    measured = frame[frame["kind"] == "measured"].set_index(["row", "column"])
    assert measured.loc[("A", "1-shot"), "value_pct"] == pytest.approx(100 - 100 * np.mean(COUNTS["meth-a"]) / QUERIES)
    assert measured.loc[("A", "1-shot"), "mark"] == "best" and measured.loc[("B", "1-shot"), "mark"] == "tie"
    assert measured.loc[("A", "1-shot"), "runs"] == store["meth-a"]["run_id"]
    assert set(zip(frame.loc[frame["kind"] == "missing", "row"], frame.loc[frame["kind"] == "missing", "column"])) == {
        ("C_1", "5-shot"),
        ("G", "1-shot"),
        ("G", "5-shot"),
    }
    excluded = frame[frame["kind"] == "excluded"]
    assert list(excluded["runs"]) == [store["g-failed"]["run_id"]] and "diverged" in excluded["note"].iloc[0]
    quoted = frame[frame["kind"] == "quoted"]
    assert sorted(zip(quoted["row"], quoted["column"], quoted["value_pct"])) == [
        ("Deep convnet", "1-shot", 24.0),
        ("Deep convnet", "5-shot", 13.25),
        ("Humans", "1-shot", 4.5),
    ]


def test_table_regenerates_byte_identically_and_names_its_sources(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(
        tmp_path / "results" / "tables",
        evidence=str(store["runs_dir"]),
        leaderboards=[
            {
                "benchmarks": ["toy-5w1s"],
                "outputs": {"md": "../leaderboards/toy-5w1s.md", "latex": "../leaderboards/toy-5w1s.tex"},
            }
        ],
        plots=[{"kind": "scarcity", "benchmarks": ["toy-scarce"], "out": "../plots/scarcity"}],
    )
    assert main(["table", "results/tables/toy.yaml"]) == 0
    printed = capsys.readouterr().out.split()
    written = sorted(p for p in (tmp_path / "results").rglob("*") if p.is_file() and p != spec)
    assert [p.relative_to(tmp_path / "results").as_posix() for p in written] == [
        "leaderboards/toy-5w1s.md",
        "leaderboards/toy-5w1s.tex",
        "plots/scarcity.csv",
        "plots/scarcity.pdf",
        "plots/scarcity.png",
        "tables/toy.bib",
        "tables/toy.csv",
        "tables/toy.md",
        "tables/toy.tex",
    ]
    assert "results/leaderboards/toy-5w1s.md" in printed
    first = {p: p.read_bytes() for p in written}
    assert main(["table", "results/tables/toy.yaml"]) == 0
    assert {p: p.read_bytes() for p in written} == first
    for path, content in first.items():
        assert str(tmp_path).encode() not in content and b"/somewhere/else" not in content, path
    md = first[tmp_path / "results" / "tables" / "toy.md"].decode()
    for name in ("meth-a", "meth-b", "meth-c", "a5-s0", "a5-s1", "a5-s2", "b5"):
        assert f"`{store[name]['run_id']}` ({COMMIT[:12]})" in md
    board = first[tmp_path / "results" / "leaderboards" / "toy-5w1s.md"].decode()
    assert "spec toy.yaml" in md and "spec ../tables/toy.yaml" in board
    assert b"scarcity" in first[tmp_path / "results" / "plots" / "scarcity.png"]  # provenance in the PNG metadata
    assert store["scarce-0.25"]["run_id"].encode() in first[tmp_path / "results" / "plots" / "scarcity.png"]


def test_a_spec_scarcity_plot_of_rows_draws_one_line_per_row(tmp_path, capsys):
    """A table spec's scarcity plot by `rows:` draws each row's own configuration, labelled by the row; by
    `methods:` it would split meth-a into two configurations (steps 100 and 50)."""
    runs = tmp_path / "runs"
    made = {
        (steps, fraction): make_run(
            runs,
            "meth-a",
            "toy-scarce",
            0,
            np.subtract(COUNTS["meth-a"], 1 if fraction < 1 else 0),
            settings={"data.train_fraction": fraction, "train.steps": steps},
            finished=f"2026-01-05T10:00:0{i}+00:00",
        )
        for i, (steps, fraction) in enumerate([(100, 0.5), (100, 1.0), (50, 1.0)])
    }
    plot = {"kind": "scarcity", "benchmarks": ["toy-scarce"], "rows": ["A-100"], "out": "scarcity"}
    spec = write_spec(
        tmp_path / "tables",
        evidence=str(runs),
        columns=[{"label": "all", "benchmark": "toy-scarce", "where": {"data.train_fraction": 1.0}}],
        rows=[
            {"label": "A-100", "method": "meth-a", "where": {"train.steps": 100}},
            {"label": "A-50", "method": "meth-a", "where": {"train.steps": 50}},
        ],
        references=[],
        plots=[plot],
    )
    assert main(["table", str(spec)]) == 0
    points = read_csv(tmp_path / "tables" / "scarcity.csv")
    assert list(points["series"]) == ["A-100", "A-100"] and list(points["train_fraction"]) == [0.5, 1.0]
    assert list(points["runs"]) == [made[(100, 0.5)]["run_id"], made[(100, 1.0)]["run_id"]]
    for change, message in (
        ({"rows": ["A-10"]}, "plots\\[0\\]: rows: no row labelled 'A-10'; did you mean 'A-100'"),
        ({"methods": ["meth-a"]}, "in place of methods; this scarcity plot also names methods"),
        ({"kind": "compute"}, "this compute plot cannot take them"),
    ):
        write_spec(
            tmp_path / "tables",
            evidence=str(runs),
            columns=[{"label": "all", "benchmark": "toy-scarce"}],
            rows=[{"label": "A-100", "method": "meth-a", "where": {"train.steps": 100}}],
            references=[],
            plots=[{k: v for k, v in {**plot, **change}.items() if v is not None}],
        )
        with pytest.raises(ConfigError, match=message):
            load_spec(spec)


def test_a_row_matching_several_configurations_must_choose_one(store, tmp_path, capsys):
    spec = write_spec(
        tmp_path,
        columns=[{"label": "scarce", "benchmark": "toy-scarce"}],
        references=[],
        rows=[{"label": "A", "method": "meth-a"}],
    )
    message = cli_error(capsys, "table", spec, "--runs-dir", store["runs_dir"], "--format", "md")
    assert "matches 3 configurations" in message and "where: {data.train_fraction: 0.25}" in message
    spec = write_spec(
        tmp_path,
        columns=[{"label": "scarce", "benchmark": "toy-scarce"}],
        references=[],
        rows=[{"label": "A", "method": "meth-a", "where": {"data.train_fraction": 0.5}}],
    )
    table = build_table(load_spec(spec), Store(RunStore(store["runs_dir"])))
    assert table.cells[0][0].group.runs[0]["run_id"] == store["scarce-0.5"]["run_id"]


def test_a_column_without_runs_is_all_missing(store, tmp_path, capsys):
    spec = write_spec(
        tmp_path,
        columns=[{"label": "1-shot", "benchmark": "toy-5w1s"}, {"label": "none yet", "benchmark": "toy-unrun"}],
        references=[],
    )
    assert main(["table", str(spec), "--runs-dir", str(store["runs_dir"]), "--format", "md"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[3].strip() for line in rows] == ["—"] * 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colums": []}, "unknown key.*colums.*Valid keys"),
        ({"metric": "f1"}, "metric must be one of accuracy, error"),
        ({"rows": [{"method": "meth-a", "where": {"train_fraction": 1}}]}, "neither a config key"),
        ({"references": [{"label": "X", "citation": "Y", "values": {"9-shot": 1.0}}]}, "unknown key.*9-shot"),
        ({"test": "ttest"}, "test must be one of wilcoxon, mcnemar"),
    ],
)
def test_spec_errors_say_what_is_wrong(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, **change))


def test_cli_prints_spec_errors_and_exits_nonzero(tmp_path, capsys):
    assert "metric must be one of" in cli_error(capsys, "table", write_spec(tmp_path, metric="f1"))


# ------------------------------------------------------------------------------------ plots


def test_scarcity_and_shots_plots_write_png_pdf_and_the_points(store, tmp_path, capsys):
    runs = str(store["runs_dir"])
    assert (
        main(
            [
                "plot",
                "scarcity",
                "--bench",
                "toy-scarce",
                "--methods",
                "meth-a",
                "--runs-dir",
                runs,
                "--out",
                str(tmp_path / "scarce"),
            ]
        )
        == 0
    )
    points = read_csv(tmp_path / "scarce.csv")
    assert list(points["train_fraction"]) == [0.25, 0.5, 1.0] and set(points["series"]) == {"meth-a"}
    expected = [100 * np.mean(np.subtract(COUNTS["meth-a"], 2 - i)) / QUERIES for i in range(3)]
    assert list(points["accuracy_pct"]) == pytest.approx(expected, abs=1e-4)
    assert list(points["runs"]) == [store[f"scarce-{f}"]["run_id"] for f in (0.25, 0.5, 1.0)]
    assert (tmp_path / "scarce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "scarce.pdf").read_bytes()[:5] == b"%PDF-"
    assert (
        main(
            [
                "plot",
                "scarcity",
                "--bench",
                "toy-scarce",
                "--methods",
                "meth-a",
                "--runs-dir",
                runs,
                "--where",
                "data.train_fraction=0.5",
                "--out",
                str(tmp_path / "half"),
            ]
        )
        == 0
    )
    assert list(read_csv(tmp_path / "half.csv")["runs"]) == [store["scarce-0.5"]["run_id"]]
    for where, message in (("budget", "--where expects KEY=VALUE"), ("budget=3", "neither a config key")):
        assert message in cli_error(
            capsys, "plot", "scarcity", "--bench", "toy-scarce", "--runs-dir", runs, "--where", where
        )

    assert (
        main(
            [
                "plot",
                "shots",
                "--benches",
                "toy-5w1s,toy-5w5s",
                "--methods",
                "meth-a,meth-b",
                "--runs-dir",
                runs,
                "--out",
                str(tmp_path / "shots"),
            ]
        )
        == 0
    )
    shots = read_csv(tmp_path / "shots.csv")
    assert sorted(zip(shots["series"], shots["shots"])) == [("meth-a", 1), ("meth-a", 5), ("meth-b", 1), ("meth-b", 5)]
    a5 = shots[(shots["series"] == "meth-a") & (shots["shots"] == 5)].iloc[0]
    assert a5["seeds"] == "0 1 2" and (tmp_path / "shots.png").is_file() and (tmp_path / "shots.pdf").is_file()


def test_curves_plot_reads_the_training_log(store, tmp_path, capsys):
    assert (
        main(
            [
                "plot",
                "curves",
                "--bench",
                "toy-5w1s",
                "--method",
                "meth-a",
                "--runs-dir",
                str(store["runs_dir"]),
                "--out",
                str(tmp_path / "curves"),
            ]
        )
        == 0
    )
    points = read_csv(tmp_path / "curves.csv")
    assert list(points["step"]) == [10, 20, 30] and list(points["loss"]) == pytest.approx([0.2, 0.1, 2 / 30])
    assert set(points["series"]) == {"meth-a seed 0"} and (tmp_path / "curves.png").is_file()
    val = tmp_path / "val"
    main(["plot", "curves", "--runs", store["meth-a"]["run_dir"], "--y", "val_accuracy", "--out", str(val)])
    assert list(read_csv(tmp_path / "val.csv")["step"]) == [30]  # empty cells are not points
    assert "--where selects runs from the store" in cli_error(
        capsys, "plot", "curves", "--runs", store["meth-a"]["run_dir"], "--where", "seed=0"
    )
    assert "no train_log.csv" in cli_error(
        capsys, "plot", "curves", "--runs", store["meth-b"]["run_dir"], "--out", tmp_path / "none"
    )


def test_a_curve_of_one_point_is_a_warning_naming_train_log_every(store, tmp_path, capsys):
    """A 100-step run logged every 100 steps has one row: its curve is drawn as a point, with a warning saying
    which setting gives more; meth-a's three-row log draws without one."""
    one = make_run(
        tmp_path,
        "meth-b",
        "toy-5w1s",
        0,
        COUNTS["meth-b"],
        finished="2026-01-01T00:00:00+00:00",
        settings={"train.log_every": 100},
        train_log=[{"step": 100, "seconds": 9.0, "lr": 0.001, "loss": 0.5}],
    )
    capsys.readouterr()
    assert (
        main(["plot", "curves", "--runs", one["run_dir"], store["meth-a"]["run_dir"], "--out", str(tmp_path / "c")])
        == 0
    )
    err = capsys.readouterr().err
    assert err.count("harness: warning:") == 1 and one["run_id"] in err and store["meth-a"]["run_id"] not in err
    assert "has 1 point" in err and "train.log_every=100" in err and "--set train.log_every=10 " in err
    assert (tmp_path / "c.png").is_file() and len(read_csv(tmp_path / "c.csv")) == 4
    assert main(["plot", "curves", "--runs", store["meth-a"]["run_dir"], "--out", str(tmp_path / "d")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_importing_the_commands_loads_no_heavy_library():
    code = (
        "import sys, harness.cli; harness.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'scipy', 'numpy') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_older_runs_settings_read_as_the_config_hash_sees_them(tmp_path):
    """View settings stored under method.* (before views were a group) and keys added since a run was made
    (at the defaults it ran with) compare equal to a newer run's, so one configuration stays one line. An
    added key belongs to the method that declares it: a SimCLR run has no method.meta_batch."""
    old = make_run(
        tmp_path,
        "simclr",
        "toy-5w1s",
        0,
        COUNTS["meth-a"],
        finished="2026-01-01T00:00:00+00:00",
        settings={"method.cj_bright": 0.8},
    )
    new = make_run(
        tmp_path,
        "simclr",
        "toy-5w1s",
        1,
        COUNTS["meth-a"],
        finished="2026-01-02T00:00:00+00:00",
        settings={"views.cj_bright": 0.8, "eval.logreg_steps": 100, "train.exact_batchnorm": False},
    )
    changed = make_run(
        tmp_path,
        "simclr",
        "toy-5w1s",
        2,
        COUNTS["meth-a"],
        finished="2026-01-03T00:00:00+00:00",
        settings={"views.cj_bright": 0.8, "eval.logreg_steps": 50},
    )
    assert read_settings(old) == read_settings(new)
    assert "method.cj_bright" not in read_settings(old) and "method.meta_batch" not in read_settings(old)
    assert read_settings(changed)["eval.logreg_steps"] == 50
    protonet = make_run(
        tmp_path,
        "protonet",
        "toy-5w1s",
        0,
        COUNTS["meth-a"],
        finished="2026-01-01T00:00:00+00:00",
        settings={"method.cj_bright": 0.8},
    )
    assert read_settings(protonet)["train.batch_size"] == 1  # stored before method.meta_batch: one task per step
    assert "method.meta_batch" not in read_settings(protonet)  # renamed train.batch_size (harness/settings.py)
    assert read_settings(protonet)["method.cj_bright"] == 0.8  # protonet has no views: nothing moves
    unregistered = make_run(tmp_path, "meth-a", "toy-5w1s", 0, COUNTS["meth-a"], finished="2026-01-01T00:00:00+00:00")
    assert read_settings(unregistered)["train.exact_batchnorm"] is False  # shared groups only


def test_a_leaderboard_keeps_only_the_runs_its_filter_names(tmp_path):
    for seed in range(2):
        make_run(tmp_path, "meth-a", "toy-5w1s", seed, COUNTS["meth-a"], finished=f"2026-01-0{seed + 1}T00:00:00+00:00")
        make_run(tmp_path, "meth-b", "toy-5w1s", seed, COUNTS["meth-b"], finished=f"2026-01-0{seed + 1}T00:00:00+00:00")
        make_run(
            tmp_path,
            "meth-a",
            "toy-5w1s",
            seed,
            COUNTS["meth-f"],
            finished=f"2026-01-0{seed + 3}T00:00:00+00:00",
            settings={"data.train_fraction": 0.1},
        )
    store = Store(RunStore(tmp_path))
    (every,) = build_boards(store, ["toy-5w1s"], None, "wilcoxon", 0.05)
    (full,) = build_boards(store, ["toy-5w1s"], None, "wilcoxon", 0.05, {"data.train_fraction": 1.0})
    assert sorted(g.label for g in every.groups) == [
        "meth-a [data.train_fraction=0.1]",
        "meth-a [data.train_fraction=1.0]",
        "meth-b",
    ]
    assert sorted(g.label for g in full.groups) == ["meth-a", "meth-b"]
    with pytest.raises(HarnessError, match="matching"):
        build_boards(store, ["toy-5w1s"], None, "wilcoxon", 0.05, {"data.train_fraction": 0.5})


def test_leaderboard_out_onto_a_folder_is_refused(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=5",
            "--runs-dir",
            tmp_path / "runs",
        )
        == 0
    )
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert run_cli("leaderboard", "--runs-dir", tmp_path / "runs", "--out", tmp_path / "out") == 2
    assert "is a folder" in one_error(capsys) and list((tmp_path / "out").iterdir()) == []
