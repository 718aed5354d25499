"""FLOP accounting (harness/compute.py): counted as executed, checked against a hand count of
Conv-4, ordered as the algorithms' work is (second-order MAML > first-order > ANIL), per phase for
CACTUs, and ``train.budget_flops`` deriving its steps and replaying exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import compute
from harness.backbones import conv4
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.runner import RunRequest, execute
from harness.settings import config_hash
from harness.store import read_scores

TINY = ["bench.episodes=10", "train.val_episodes=2"]


def test_conv4_forward_is_the_hand_count():
    """2 FLOPs per multiply-add of each 3×3 convolution (64 filters; 28 → 14 → 7 → 3 after each pool)."""
    batch, model = 5, conv4(1, 28)
    with compute.counting() as count:
        model(torch.zeros(batch, 1, 28, 28))
    by_hand = sum(2 * batch * side * side * 64 * cin * 9 for side, cin in ((28, 1), (14, 64), (7, 64), (3, 64)))
    assert count.total == by_hand
    with compute.counting(active=False) as idle:
        model(torch.zeros(batch, 1, 28, 28))
    assert idle.total == 0


def step_flops(method: str, tmp_path, *sets: str) -> dict:
    resolved = resolve(method, "synthetic-5w1s", sets=[*TINY, "train.steps=2", *sets])
    return execute(RunRequest(resolved, 0, tmp_path / method, progress=False))["flops"]


def test_second_order_maml_counts_more_than_first_order_more_than_anil(tmp_path):
    """Second-order MAML back-propagates through the inner step; first-order MAML does not, but still
    back-propagates the support loss through the body in the inner loop, which first-order ANIL (head
    only) does not. Second-order ANIL back-propagates the support features through its adapted head in
    the outer step instead, about first-order MAML's work, and less than MAML's."""
    small = ["bench.episodes=1", "train.batch_size=1", "method.test_inner_steps=1"]  # only the step's counts matter
    maml, first_order = step_flops("maml", tmp_path, *small)["step"], step_flops("maml-fo", tmp_path, *small)["step"]
    anil = step_flops("anil", tmp_path, *small)["step"]
    anil_first_order = step_flops("anil", tmp_path / "fo", *small, "method.first_order=true")["step"]
    assert maml > first_order > anil_first_order > 0
    assert maml > anil > anil_first_order


def test_flops_per_phase_and_in_total(tmp_path):
    flops = step_flops(
        "cactus-protonet",
        tmp_path,
        "train.steps=4",
        "method.encoder_steps=2",
        "method.partitions=2",
        "method.clusters=30",
        "method.encoder_batch_size=16",
    )
    embedding, meta = flops["phases"]
    assert (embedding["from_step"], embedding["steps"], meta["from_step"], meta["steps"]) == (0, 2, 2, 2)
    assert meta["once"] > 0  # embedding every training image for k-means, once
    assert flops["train"] == flops["setup"] + sum(p["once"] + p["step"] * p["steps"] for p in flops["phases"])
    assert flops["eval"] > 0 and "FlopCounterMode" in flops["counted"]


def test_budget_flops_buys_steps_and_replays_exactly(tmp_path):
    step = step_flops("protonet", tmp_path)["step"]
    budget = [f"train.budget_flops={3.5 * step}"]
    runs = [
        execute(
            RunRequest(resolve("protonet", "synthetic-5w1s", sets=[*TINY, *budget]), 0, tmp_path / name, progress=False)
        )
        for name in ("a", "b")
    ]
    assert [r["steps"] for r in runs] == [3, 3] and runs[0]["flops"]["budget"] == 3.5 * step
    assert runs[0]["config_hash"] == config_hash(resolve("protonet", "synthetic-5w1s", sets=[*TINY, *budget]).config)
    assert np.array_equal(read_scores(tmp_path / "a")[1], read_scores(tmp_path / "b")[1])
    with pytest.raises(ConfigError, match="both set how long the run trains"):  # which would win: refused
        resolve("protonet", "synthetic-5w1s", sets=[*TINY, *budget, "train.steps=2"])
    with pytest.raises(ConfigError, match="pixels does not train"):
        resolve("pixels", "synthetic-5w1s", sets=[*TINY, *budget])
    with pytest.raises(ConfigError, match="buys no training step"):
        execute(
            RunRequest(
                resolve("protonet", "synthetic-5w1s", sets=[*TINY, f"train.budget_flops={step / 2}"]),
                0,
                tmp_path / "c",
                progress=False,
            )
        )


@pytest.mark.parametrize(
    "method, sets",
    [
        ("protonet", ["train.steps=5"]),
        (
            "cactus-protonet",
            [
                "train.steps=5",
                "method.encoder_steps=2",
                "method.partitions=2",
                "method.clusters=30",
                "method.encoder_batch_size=16",
            ],
        ),
    ],
)
def test_harness_flops_recounts_a_stored_run_as_it_counted_itself(method, sets, tmp_path):
    from harness.store import read_record, write_record

    from conftest import run_cli

    made = execute(
        RunRequest(resolve(method, "synthetic-5w1s", sets=[*TINY, *sets]), 0, tmp_path / "run", progress=False)
    )
    record = read_record(tmp_path / "run")
    record.pop("run_dir")
    write_record(tmp_path / "run", {k: v for k, v in record.items() if k != "flops"})  # as made before accounting
    assert run_cli("flops", tmp_path) == 0
    again = read_record(tmp_path / "run")["flops"]
    assert {k: v for k, v in again.items() if k != "counted"} == {
        k: v for k, v in made["flops"].items() if k != "counted"
    }
    assert "recomputed by `harness flops`" in again["counted"]


def test_flops_on_records_that_are_not_harness_runs_is_one_error(tmp_path, capsys):
    import json

    from conftest import one_error, only_run, run_cli

    runs = tmp_path / "runs"
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "bench.episodes=4",
            "--runs-dir",
            runs,
            "--no-progress",
        )
        == 0
    )
    record_path = only_run(runs) / "result.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record.pop("config_hash"), record.pop("flops")
    record_path.write_text(json.dumps(record), encoding="utf-8")
    before = record_path.read_bytes()
    capsys.readouterr()
    assert run_cli("flops", runs) == 2
    assert "config_hash" in one_error(capsys) and record_path.read_bytes() == before
