"""Paths: names become path components only after a safe-character check, and the paths a
spec or a split file names stay inside their documented roots; otherwise one error, nothing written."""

from __future__ import annotations

import json

import pytest
from test_own_data import bench_file, harness_error, image_folder

from conftest import run_cli
from test_evidence import tiny_spec


@pytest.mark.parametrize("name", ["x/../../../escaped", "a/b", "..", ".hidden", "white space"])
def test_a_benchmark_name_that_is_no_safe_path_component_is_refused(tmp_path, capsys, name):
    image_folder(tmp_path / "imgs", {"train": 6, "test": 6})
    path = bench_file(tmp_path / "mine.yaml", {"image_folder": "imgs"}, name=name)
    assert run_cli("run", "--method", "pixels", "--bench", f"{path}", "--runs-dir", tmp_path / "runs") == 2
    assert "letters, digits and . _ + -" in harness_error(capsys)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(
    "where, outside",
    [
        ({"outputs": {"md": "/tmp/harness-abs-table.md"}}, "/tmp/harness-abs-table.md"),
        ({"outputs": {"md": "../../../../x.md"}}, "../../../../x.md"),
        ({"plots": [{"kind": "scarcity", "benchmarks": ["synthetic-5w1s"], "out": "/tmp/p"}]}, "/tmp/p"),
    ],
)
def test_spec_paths_stay_beside_the_spec(tmp_path, capsys, where, outside):
    spec = tiny_spec(tmp_path / "results" / "tables", **where)
    assert run_cli("table", spec) == 2
    assert f"'{outside}' lies outside" in harness_error(capsys)


@pytest.mark.parametrize(
    "split",
    [
        {"train": ["/etc"], "test": ["class01"]},
        {"train": ["class00", "../../imgs/x"], "test": ["class01"]},
    ],
)
def test_split_file_classes_stay_inside_the_image_folder(tmp_path, capsys, split):
    image_folder(tmp_path / "flat", {"all": 4})
    (tmp_path / "split.json").write_text(json.dumps(split))
    path = bench_file(tmp_path / "b.yaml", {"image_folder": "flat/all", "split": "split.json"})
    assert run_cli("run", "--method", "pixels", "--bench", path, "--runs-dir", tmp_path / "runs") == 2
    assert "lies outside the image folder" in harness_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_split_csv_rows_stay_inside_the_image_folder(tmp_path, capsys):
    image_folder(tmp_path / "flat", {"all": 4})
    (tmp_path / "train.csv").write_text("filename,label\n../../../etc/passwd,class00\n")
    (tmp_path / "test.csv").write_text("filename,label\nimg0.png,class00\n")
    path = bench_file(
        tmp_path / "c.yaml", {"image_folder": "flat/all", "split": {"train": "train.csv", "test": "test.csv"}}
    )
    assert run_cli("run", "--method", "pixels", "--bench", path, "--runs-dir", tmp_path / "runs") == 2
    assert "lies outside the image folder" in harness_error(capsys)
