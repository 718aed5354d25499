"""Wrong results recorded as ok: image folders decode every mode PIL reads with its full range
(16-bit grey scaled, not clipped; content in the alpha channel kept by compositing over white), and a split
whose images all decode to one value is refused naming files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_own_data import bench_file, harness_error

from harness.benchmarks import get_benchmark
from harness.protocol import Benchmark

from conftest import run_cli


def pattern(label: int, i: int) -> np.ndarray:
    rng = np.random.default_rng(100 * label + i)
    return np.clip(rng.integers(0, 256, (28, 28)) // 2 + 64 * (label % 4), 0, 255).astype(np.uint8)


def folder(root, save) -> None:
    for split, labels in (("train", range(6)), ("test", range(6, 12))):
        for label in labels:
            (root / split / f"c{label:02d}").mkdir(parents=True)
            for i in range(3):
                save(pattern(label, i), root / split / f"c{label:02d}" / f"{i}.png")


def grey16(values, path):
    Image.fromarray(values.astype(np.uint16) * 257).save(path)  # mode I;16


def alpha_only(values, path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = 255 - values  # black ink drawn only through the alpha channel
    Image.fromarray(rgba, "RGBA").save(path)


@pytest.mark.parametrize("save, channels", [(grey16, 1), (alpha_only, 3)])
def test_sixteen_bit_and_alpha_images_decode_with_their_content(tmp_path, save, channels):
    folder(tmp_path / "imgs", save)
    bench = Benchmark.of(
        get_benchmark(str(bench_file(tmp_path / "b.yaml", {"image_folder": "imgs"}, queries=1, shots=1)))
    )
    test = bench.dataset.load(bench.root, "test")
    first = test.images[0].numpy().astype(int)
    expected = pattern(6, 0).astype(int)
    if channels == 3:
        assert test.images.shape[1] == 3
        assert np.abs(first[0] - expected).max() <= 1  # white composited under alpha: the pattern itself
    else:
        assert np.abs(first[0] - expected).max() <= 1  # 16-bit scaled down, not clipped to 255
    assert len(np.unique(first)) > 10


def test_a_split_of_constant_images_is_refused(tmp_path, capsys):
    folder(tmp_path / "imgs", lambda values, path: Image.fromarray(np.full((28, 28), 7, np.uint8)).save(path))
    path = bench_file(tmp_path / "b.yaml", {"image_folder": "imgs"}, queries=1, shots=1)
    assert run_cli("run", "--method", "pixels", "--bench", path, "--runs-dir", tmp_path / "runs") == 2
    assert "decodes to a single value" in harness_error(capsys) and not (tmp_path / "runs").exists()
