"""Mixed precision and compilation: ``train.precision=bf16|16`` trains the forward pass under
autocast, float16 with a gradient scaler that is checkpointed; ``train.compile`` compiles the method's
modules; both are recorded; 32 and no compilation are the unchanged defaults."""

from __future__ import annotations

import json

import pytest
import torch

from harness.errors import ConfigError
from harness.resolve import resolve
from harness.runner import RunRequest, execute
from harness.settings import config_hash

TINY = ["train.steps=2", "train.batch_size=4", "bench.episodes=10", "train.log_every=1", "train.checkpoint_every=1"]


def test_bf16_trains_under_autocast_and_is_recorded(tmp_path, monkeypatch):
    resolved = resolve("simclr", "synthetic-5w1s", sets=[*TINY, "train.steps=1", "train.precision=bf16"])
    dtypes = []
    original = resolved.method_class.loss

    def loss(self, views, progress):
        dtypes.append(self.encoder(views[0][:1]).dtype)  # what the encoder computes in, inside the step
        return original(self, views, progress)

    monkeypatch.setattr(resolved.method_class, "loss", loss)
    record = execute(RunRequest(resolved, 0, tmp_path / "run", device="cpu", progress=False))
    assert dtypes == [torch.bfloat16]
    assert record["status"] == "ok" and record["precision"] == "bf16" and record["world_size"] == 1
    assert 0 <= record["accuracy"] <= 1


def test_float16_scales_its_loss_checkpoints_the_scaler_and_resumes(tmp_path):
    resolved = resolve(
        "protonet",
        "synthetic-5w1s",
        sets=[*TINY, "train.precision=16", "method.train_ways=5", "method.train_queries=2"],
    )
    execute(RunRequest(resolved, 0, tmp_path / "run", device="cpu", progress=False))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["optimizers"]["grad_scaler"]["scale"] > 0  # the scaler's state travels with the optimisers'
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["precision"] == "16"
    # Resuming a finished float16 run restores the scaler too (a mismatch would be an error).
    resumed = resolve(
        "protonet",
        "synthetic-5w1s",
        sets=[*TINY[:-1], "train.steps=3", "train.precision=16", "method.train_ways=5", "method.train_queries=2"],
    )
    (tmp_path / "run" / "result.json").write_text(json.dumps({**record, "status": "running"}))
    state["done"] = False
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    assert execute(RunRequest(resumed, 0, tmp_path / "run", device="cpu", resume=True, progress=False))["steps"] == 3


def test_compile_compiles_the_methods_modules_and_is_recorded(tmp_path, monkeypatch):
    """The wiring only: compiling for real takes minutes on CPU; tests/gpu/ compiles on CUDA."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    record = execute(
        RunRequest(
            resolve("simclr", "synthetic-5w1s", sets=[*TINY, "train.compile=true"]),
            0,
            tmp_path / "run",
            device="cpu",
            progress=False,
        )
    )
    assert record["compiled"] is True and "SimCLRProjectionHead" in compiled and len(compiled) >= 2


def test_precision_values_and_the_default():
    assert resolve("simclr", "synthetic-5w1s").config.train.precision == "32"
    assert resolve("simclr", "synthetic-5w1s", sets=["train.precision=16"]).config.train.precision == "16"
    with pytest.raises(ConfigError, match="train.precision must be one of '32', 'bf16', '16'"):
        resolve("simclr", "synthetic-5w1s", sets=["train.precision=8"])
    plain = config_hash(resolve("simclr", "synthetic-5w1s").config)
    assert config_hash(resolve("simclr", "synthetic-5w1s", sets=["train.precision=bf16"]).config) != plain
