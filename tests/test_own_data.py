"""Your own data: image-folder datasets declared in benchmark files outside the package,
their runs, cross-domain scores and tables, the errors users hit, and fetching built-in data on first use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.benchmarks import get_benchmark
from harness.errors import DataError
from harness.protocol import Benchmark
from harness.store import read_record

from conftest import MIRROR, run_cli

BENCH = {"description": "my images", "image_size": 28, "ways": 5, "shots": 1, "queries": 5, "episodes": 40}
FAST = ["--no-progress", "--set", "train.steps=2"]


def draw_class(folder: Path, label: int, count: int, colour: bool) -> None:
    """``count`` 28 px images of one class (a fixed random pattern plus noise): grey PNGs or colour JPEGs."""
    rng = np.random.default_rng(label)
    pattern = rng.integers(0, 256, (28, 28, 3 if colour else 1))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.clip(pattern + rng.normal(0, 20, pattern.shape), 0, 255).astype(np.uint8)
        if colour:
            Image.fromarray(pixels).save(folder / f"img{i}.jpg", quality=95)
        else:
            Image.fromarray(pixels[..., 0]).save(folder / f"img{i}.png")


def image_folder(root: Path, splits: dict[str, int], per_class: int = 6) -> Path:
    """``root/<split>/<class>/`` with ``splits[split]`` classes each, alternating grey PNG and colour JPEG."""
    label = 0
    for split, classes in splits.items():
        for _ in range(classes):
            draw_class(root / split / f"class{label:02d}", label, per_class, colour=label % 2 == 1)
            label += 1
    return root


def bench_file(path: Path, dataset: dict, name: str = "mine-5w1s", **settings) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**BENCH, **settings, "dataset": dataset, "benchmarks": {name: {}}}))
    return path


def harness_error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness: error:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def own(tmp_path) -> Path:
    """A benchmark file in tmp_path/own for an image folder with train (20 classes), val (5), test (8)."""
    image_folder(tmp_path / "own" / "my-images", {"train": 20, "val": 5, "test": 8})
    return bench_file(tmp_path / "own" / "mine.yaml", {"image_folder": "my-images"})


def test_train_score_crosseval_and_table_on_your_own_images(own, runs_dir, tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            own,
            *FAST,
            "--set",
            "method.train_ways=5",
            "--set",
            "method.train_queries=2",
            "--runs-dir",
            runs_dir,
        )
        == 0
    )
    assert "decoding the 198 images" in capsys.readouterr().err
    [trained] = [read_record(p) for p in runs_dir.iterdir()]
    assert trained["benchmark"] == "mine-5w1s" and trained["benchmark_file"] == str(own.resolve())
    assert len(trained["benchmark_sha256"]) == 64 and trained["episodes"] == 40

    assert (
        run_cli(
            "run",
            "--method",
            "protonet",
            "--bench",
            "synthetic-5w1s",
            *FAST,
            "--set",
            "bench.episodes=20",
            "--set",
            "train.val_episodes=10",
            "--runs-dir",
            tmp_path / "src",
        )
        == 0
    )
    [source] = list((tmp_path / "src").iterdir())
    assert run_cli("eval", "--run", source, "--bench", own, "--runs-dir", runs_dir) == 0  # grey model, colour images
    [scored] = [r for r in map(read_record, runs_dir.iterdir()) if r["kind"] == "eval"]
    assert scored["trained_on"] == "synthetic-5w1s" and scored["benchmark"] == "mine-5w1s"
    assert (
        scored["benchmark_sha256"] == trained["benchmark_sha256"]
        and scored["episode_digest"] == trained["episode_digest"]
    )

    spec = tmp_path / "tables" / "mine.yaml"
    spec.parent.mkdir()
    spec.write_text(
        yaml.safe_dump(
            {
                "title": "Own images",
                "evidence": str(runs_dir),
                "outputs": {"md": "mine.md"},
                "columns": [{"label": "mine", "benchmark": "../own/mine.yaml"}],
                "rows": [
                    {"label": "protonet here", "method": "protonet", "where": {"kind": "train"}},
                    {"label": "protonet from synthetic", "method": "protonet", "where": {"kind": "eval"}},
                ],
            }
        )
    )
    assert run_cli("table", spec) == 0
    table = (spec.parent / "mine.md").read_text()
    assert "protonet here" in table and "protonet from synthetic" in table and "—" not in table
    assert run_cli("reproduce", spec, "--only", "protonet here", "--dry-run", "--runs-dir", tmp_path / "re") == 0
    assert "mine-5w1s" in capsys.readouterr().out


def test_benchmark_folder_joins_the_registry(own, monkeypatch, capsys, runs_dir):
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(own.parent))
    assert run_cli("list", "benchmarks") == 0
    out = capsys.readouterr().out
    assert "mine-5w1s" in out and "synthetic-5w1s" in out and "dataset=image folder" in out
    assert run_cli("run", "--method", "pixels", "--bench", "mine-5w1s", "--runs-dir", runs_dir) == 0
    assert (
        run_cli(
            "sweep",
            "--methods",
            "pixels",
            "--benches",
            f"mine-5w1s,{own}",
            "--executor",
            "local",
            "--dry-run",
            "--runs-dir",
            runs_dir,
        )
        == 0
    )
    bench_file(own.parent / "again.yaml", {"image_folder": "my-images"})  # the same name in a second file
    assert run_cli("list", "benchmarks") == 2
    assert "benchmark 'mine-5w1s' is defined twice" in harness_error(capsys)


def test_split_files_json_and_csv(tmp_path):
    images = image_folder(tmp_path / "flat", {"all": 12})
    for folder in (images / "all").iterdir():
        folder.rename(images / folder.name)
    classes = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name != "all")
    (tmp_path / "splits.json").write_text(json.dumps({"train": classes[:6], "test": classes[6:]}))
    by_json = bench_file(tmp_path / "json.yaml", {"image_folder": "flat", "split": "splits.json", "channels": 1})
    for split, names in (("train", classes[:6]), ("test", classes[6:])):  # Ravi & Larochelle: filename,label
        rows = [f"{p.name},{name}" for name in names for p in sorted((images / name).iterdir())]
        (tmp_path / f"{split}.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    by_csv = bench_file(
        tmp_path / "csv.yaml", {"image_folder": "flat", "split": {"train": "train.csv", "test": "test.csv"}}
    )
    for path, channels in ((by_json, 1), (by_csv, 3)):
        bench = Benchmark.of(get_benchmark(str(path)))
        assert bench.spec.splits == {"train": "train", "test": "test"} and bench.dataset.channels == channels
        test = bench.dataset.load(bench.root, "test")
        assert test.images.shape == (36, channels, 28, 28) and test.class_names == classes[6:]
        assert bench.dataset.load(bench.root, "test", 16).images.shape == (36, channels, 16, 16)
        assert len(bench.dataset.mean) == channels and all(0 < s < 1 for s in bench.dataset.std)


def test_clear_errors_for_the_cases_users_hit(tmp_path, capsys, runs_dir):
    def error_of(dataset: dict, **settings) -> str:
        path = bench_file(tmp_path / f"case{len(list(tmp_path.glob('case*.yaml')))}.yaml", dataset, **settings)
        assert run_cli("run", "--method", "pixels", "--bench", path, "--runs-dir", runs_dir) == 2
        return harness_error(capsys)

    small = image_folder(tmp_path / "small", {"train": 6, "test": 6})
    for extra in (small / "test" / "class09").glob("img[345].*"):
        extra.unlink()
    assert f"exceeds the 3 images per test class of mine-5w1s (class {small / 'test' / 'class09'} has 3)" in error_of(
        {"image_folder": "small"}
    )

    empty = image_folder(tmp_path / "empty", {"train": 6})
    (empty / "test").mkdir()
    assert f"split 'test' of image folder {empty} is empty" in error_of({"image_folder": "empty"})

    broken = image_folder(tmp_path / "broken", {"train": 6, "test": 6})
    (broken / "train" / "class00" / "bad.png").write_bytes(b"not an image")
    (broken / "train" / "class01" / "cut.jpg").write_bytes(
        (broken / "train" / "class01" / "img0.jpg").read_bytes()[:200]
    )
    message = error_of({"image_folder": "broken"})
    assert (
        "2 of 38 images in split 'train'" in message and "class00/bad.png" in message and "class01/cut.jpg" in message
    )

    (tmp_path / "split.json").write_text(json.dumps({"train": ["class00", "class01"], "test": ["class02", "nosuch"]}))
    message = error_of({"image_folder": "broken/train", "split": "split.json"})
    assert "names 1 classes with no folder" in message and "nosuch" in message
    assert "unknown key(s) colour" in error_of({"image_folder": "small", "colour": 3})
    assert not runs_dir.exists()


def test_tables_refuse_two_definitions_under_one_name(own, runs_dir, tmp_path, capsys):
    assert run_cli("run", "--method", "pixels", "--bench", own, "--runs-dir", runs_dir) == 0
    draw_class(own.parent / "my-images" / "train" / "class00", 99, 7, colour=False)  # one more training image
    assert (
        run_cli("run", "--method", "pixels", "--bench", own, "--set", "eval.distance=cosine", "--runs-dir", runs_dir)
        == 0
    )
    hashes = {read_record(p)["benchmark_sha256"] for p in runs_dir.iterdir()}
    assert len(hashes) == 2
    assert run_cli("leaderboard", "--bench", "mine-5w1s", "--runs-dir", runs_dir) == 2
    assert "made on different definitions of it: benchmark hash" in harness_error(capsys)


@pytest.mark.skipif(
    not (MIRROR and (Path(MIRROR) / "omniglot" / "all_runs.zip").is_file()),
    reason="fetch on first use needs HARNESS_DATA_MIRROR with omniglot/ (CI: ../shared/data)",
)
def test_run_fetches_a_missing_builtin_dataset_on_first_use(tmp_path, runs_dir, capsys):
    args = ["run", "--method", "pixels", "--bench", "omniglot-small1-20w1s-lake", "--runs-dir", runs_dir]
    assert run_cli(*args, "--no-download", "--set", f"data.root={tmp_path / 'strict'}") == 2
    assert "`harness data download omniglot-small1`" in harness_error(capsys) and not runs_dir.exists()
    assert run_cli(*args, "--set", f"data.root={tmp_path / 'fresh'}") == 0
    assert f"omniglot-small1 is not under {tmp_path / 'fresh'}: downloading" in capsys.readouterr().err
    assert (tmp_path / "fresh" / "omniglot" / "raw" / "all_runs.zip").is_file()
    with pytest.raises(DataError, match="not present"):
        Benchmark.of(get_benchmark("omniglot-small1-20w1s-lake"), str(tmp_path / "strict")).ensure_available()
