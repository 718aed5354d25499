"""`harness site`: the static leaderboard site from a table spec's evidence, regenerated
byte-identically, offline, all or nothing, and rendered by a real (headless) Chromium.

The store: the registered names protonet (three seeds, with training logs), maml and pixels on
synthetic-5w1s (30 episodes × 10 queries); a spec with a leaderboard and a curves plot.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.errors import HarnessError
from harness.settings import stored_hash
from harness.site import build_site
from harness.store import TRAIN_LOG, write_config, write_record, write_scores

BENCH = "synthetic-5w1s"
QUERIES = 10
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Correct answers (of 10) in each of 30 episodes; protonet's seeds shift them by 0, +1, -1.
COUNTS = {
    "protonet": [7, 8, 6, 9, 7, 8, 7, 6, 8, 9, 7, 8, 6, 7, 8, 9, 7, 6, 8, 7, 8, 7, 9, 6, 8, 7, 8, 7, 6, 8],
    "maml": [6, 8, 5, 9, 7, 7, 6, 6, 8, 8, 6, 7, 5, 7, 8, 8, 6, 5, 8, 6, 7, 7, 9, 5, 7, 7, 8, 6, 6, 7],
    "pixels": [3, 4, 1, 6, 3, 5, 4, 2, 5, 6, 4, 5, 3, 4, 4, 6, 4, 2, 5, 4, 3, 4, 6, 2, 5, 4, 5, 4, 2, 4],
}


def make_run(runs: Path, method: str, seed: int, counts: list[int], minute: int) -> dict:
    """One run's evidence as `harness run` writes it."""
    tree = {
        "method_name": method,
        "benchmark": BENCH,
        "bench": {"ways": 5, "shots": 1, "queries": 2, "episodes": 30, "episode_seed": 0},
        "data": {"root": "/somewhere/else", "train_fraction": 1.0, "image_size": 28},
        "train": {"steps": 30 if method != "pixels" else 0, "lr": 0.001},
        "eval": {"head": "prototype"},
        "method": {},
    }
    digest = stored_hash(tree)
    run_id = f"20260105-10{minute:02d}00-{method}-{BENCH}-s{seed}-{digest[:8]}-00{minute:02d}"
    run_dir = runs / run_id
    write_config(run_dir, tree)
    correct = np.arange(QUERIES)[None, :] < np.clip(counts, 0, QUERIES)[:, None]
    accuracies = correct.mean(axis=1)
    write_scores(run_dir, accuracies, correct)
    if method != "pixels":
        (run_dir / TRAIN_LOG).write_text(
            "step,seconds,lr,loss,val_accuracy\n"
            + "".join(f"{s},{s / 10},0.001,{2.0 / s + seed / 10},{'' if s < 30 else 0.5}\n" for s in (10, 20, 30))
        )
    record = {
        "run_id": run_id,
        "kind": "train",
        "method": method,
        "benchmark": BENCH,
        "trained_on": BENCH,
        "seed": seed,
        "config_hash": digest,
        "head": "prototype",
        "distance": "euclidean",
        "status": "ok",
        "reason": None,
        "started": "2026-01-05T10:00:00+00:00",
        "finished": f"2026-01-05T10:{minute:02d}:00+00:00",
        "device": "cpu: test",
        "host": "test",
        "command": "harness run",
        "versions": {"torch": "2.x"},
        "git": {"commit": COMMIT, "dirty": False},
        "train_seconds": 3.0,
        "steps": 30 if method != "pixels" else 0,
        "val_accuracy": None,
        "peak_memory_mb": 300.0,
        "accuracy": float(accuracies.mean()),
        "error": float(1 - accuracies.mean()),
        "ci95": float(1.96 * accuracies.std(ddof=1) / math.sqrt(len(accuracies))),
        "episodes": 30,
        "queries_per_episode": QUERIES,
        "episode_digest": "digest",
        "eval_seconds": 0.1,
    }
    write_record(run_dir, record)
    return {**record, "run_dir": str(run_dir)}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A results/ folder: the evidence, a spec, and the outputs `harness table` made from them."""
    root = tmp_path_factory.mktemp("project")
    runs = root / "results" / "runs" / "toy"
    made = {"root": root, "runs": []}
    for seed, shift in enumerate((0, 1, -1)):
        made["runs"].append(make_run(runs, "protonet", seed, list(np.add(COUNTS["protonet"], shift)), seed))
    made["runs"].append(make_run(runs, "maml", 0, COUNTS["maml"], 10))
    made["runs"].append(make_run(runs, "pixels", 0, COUNTS["pixels"], 11))
    spec = root / "results" / "tables" / "toy.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        yaml.safe_dump(
            {
                "title": "Toy one-shot error",
                "metric": "error",
                "seeds": "0-2",
                "columns": [{"label": "5-way 1-shot", "benchmark": BENCH}],
                "rows": [
                    {"label": "ProtoNet", "method": "protonet"},
                    {"label": "MAML", "method": "maml"},
                    {"label": "Pixels", "method": "pixels"},
                ],
                "references": [{"label": "Humans", "citation": "Somebody 2015", "values": {"5-way 1-shot": 4.5}}],
                "leaderboards": [{"benchmarks": [BENCH], "outputs": {"md": f"../leaderboards/{BENCH}.md"}}],
                "plots": [
                    {"kind": "curves", "benchmarks": [BENCH], "methods": ["protonet"], "out": "../plots/curves-toy"}
                ],
            },
            sort_keys=False,
        )
    )
    assert main(["table", str(spec)]) == 0
    made["spec"] = spec
    return made


def site_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_site_has_every_page_regenerates_byte_identically_and_needs_no_network(project, tmp_path):
    out = tmp_path / "site"
    assert build_site([project["spec"]], out) == (1 + 1 + 5, 1)
    first = site_files(out)
    run_pages = {f"runs/{r['run_id']}.html" for r in project["runs"]}
    assert set(first) == {".harness-owned", "index.html", f"bench/{BENCH}.html", "plots/curves-toy.png"} | run_pages
    assert first["plots/curves-toy.png"] == (project["root"] / "results" / "plots" / "curves-toy.png").read_bytes()
    (out / "screenshot.png").write_bytes(b"taken by hand")
    assert build_site([project["spec"]], out) == (7, 1)
    again = site_files(out)
    assert again.pop("screenshot.png") == b"taken by hand"  # kept across regeneration
    assert again == first
    for name, content in first.items():
        if name.endswith(".html"):
            text = content.decode()
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
            assert str(project["root"]) not in text and str(tmp_path) not in text and "/somewhere/else" not in text, (
                name
            )
    bench = first[f"bench/{BENCH}.html"].decode()
    for run in project["runs"]:
        assert f'href="../runs/{run["run_id"]}.html"' in bench
    assert bench.count("<svg") == 3 and 'src="../plots/curves-toy.png"' in bench
    assert "Published results (quoted, not measured, not ranked)" in bench and "Humans" in bench
    protonet_run = first[f"runs/{project['runs'][0]['run_id']}.html"].decode()
    assert protonet_run.count("<polyline") == 3  # lr, loss, val_accuracy against the step
    assert "train.steps" in protonet_run and COMMIT in protonet_run


def test_site_writes_nothing_when_a_plot_is_missing(project, tmp_path, capsys, monkeypatch):
    out = tmp_path / "site"
    build_site([project["spec"]], out)
    before = site_files(out)
    png = project["root"] / "results" / "plots" / "curves-toy.png"
    hidden = tmp_path / "hidden.png"
    shutil.move(png, hidden)
    try:
        with pytest.raises(HarnessError, match="curves-toy.png is missing.*harness table"):
            build_site([project["spec"]], out)
    finally:
        shutil.move(hidden, png)
    assert site_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no staged leftovers
    monkeypatch.chdir(tmp_path)
    assert main(["site"]) == 2
    assert "no table specs: results/tables/*.yaml matches nothing" in capsys.readouterr().err


def chromium(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium; CI installs it)")
    return subprocess.run(
        [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def test_the_leaderboard_renders_in_headless_chromium(project, tmp_path):
    """The rendered DOM has the leaderboard's rows, ranks and numbers; a screenshot is saved."""
    from harness.report.render import plus_minus

    out = tmp_path / "site"
    build_site([project["spec"]], out)
    page = (out / "bench" / f"{BENCH}.html").resolve().as_uri()
    dom = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page).stdout
    assert "<table>" in dom and "Leaderboard" in dom
    rows = [r for r in dom.split("<tr>") if "seed 0</a>" in r]
    assert [next(m for m in ("protonet", "maml", "pixels") if f"<td>{m}</td>" in r) for r in rows[:3]] == [
        "protonet",
        "maml",
        "pixels",
    ]
    for run in project["runs"][3:]:  # single-seed rows: the run's accuracy ± its CI over episodes
        assert plus_minus(100 * run["accuracy"], 100 * run["ci95"], 2) in dom
    protonet = [r for r in project["runs"] if r["method"] == "protonet"]
    mean = 100 * float(np.mean([r["accuracy"] for r in protonet]))
    assert f"{mean:.2f} ± " in dom
    shot = tmp_path / "leaderboard.png"
    chromium(f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    index = chromium(
        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (out / "index.html").resolve().as_uri()
    ).stdout
    assert "Toy one-shot error" in index and BENCH in index and "protonet (" in index


def test_a_run_page_shows_its_mechanisms_and_their_warnings(project):
    from harness.site import run_page

    record = {
        **read_record_of(project["runs"][0]),
        "mechanisms": {"inner_gain": 7.3e-07, "match_kl": 0.42},
        "warnings": ["inner_gain has a median of 7.3e-07 over the second half of training, below 0.05: ..."],
    }
    page = run_page(record)
    assert "<h2>Mechanisms</h2>" in page and "7.3e-07" in page and "0.42" in page
    assert "warning: inner_gain has a median" in page
    assert "<h2>Mechanisms</h2>" not in run_page(read_record_of(project["runs"][0]))


def read_record_of(made: dict) -> dict:
    from harness.store import read_record

    return read_record(made["run_dir"])
