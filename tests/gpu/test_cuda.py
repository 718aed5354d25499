"""Every training method on CUDA, in float32 and bfloat16, a few steps each (skipped without a GPU).
Run on a GPU machine with: pytest -q tests/gpu (then tests/perf/bench_gpu.py for the speeds)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods import METHODS
from harness.resolve import resolve
from harness.runner import RunRequest, execute

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TRAINING = [entry.name for entry in METHODS if entry.family != "reference"]
SMALL = {
    "protonet": ["method.train_ways=5", "method.train_queries=5"],
    "bmssl": ["method.ways=8"],
    "cactus": ["method.encoder_steps=2", "method.partitions=2", "method.clusters=30"],
}


@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("method", TRAINING)
def test_trains_on_cuda(method, precision, tmp_path):
    sets = [
        "train.steps=3",
        "train.batch_size=8",
        "bench.episodes=20",
        "train.log_every=1",
        f"train.precision={precision}",
        *SMALL.get(method.split("-")[0], []),
    ]
    record = execute(
        RunRequest(resolve(method, "synthetic-5w1s", sets=sets), 0, tmp_path / "run", device="cuda", progress=False)
    )
    assert record["status"] == "ok" and record["precision"] == precision and "cuda" in record["device"].lower()
    assert math.isfinite(record["accuracy"])


def test_compile_on_cuda(tmp_path):
    sets = ["train.steps=3", "train.batch_size=16", "bench.episodes=20", "train.compile=true"]
    record = execute(
        RunRequest(resolve("simclr", "synthetic-5w1s", sets=sets), 0, tmp_path / "run", device="cuda", progress=False)
    )
    assert record["status"] == "ok" and record["compiled"] is True
