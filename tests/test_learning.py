"""The methods learn: a short training run beats raw pixels on the embedded benchmark's fixed test episodes."""

from __future__ import annotations

import pytest

from harness.store import read_record

from conftest import only_run, run_cli

COMMON = ["--bench", "synthetic-5w1s", "--set", "bench.episodes=300", "--no-progress"]


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("pixels")
    assert run_cli("run", "--method", "pixels", *COMMON, "--runs-dir", runs) == 0
    return read_record(only_run(runs))


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, sets",
    [
        # MAML and ANIL adapt on every episode: they validate on few
        ("protonet", ["train.steps=100", "train.val_episodes=20"]),
        ("maml", ["train.steps=100", "train.val_episodes=20"]),
        ("anil", ["train.steps=100", "train.val_episodes=20"]),
        ("simclr", ["train.steps=100", "train.batch_size=64"]),
        ("byol", ["train.steps=100", "train.batch_size=64"]),
        ("bmssl", ["train.steps=50", "train.batch_size=2"]),
    ],
)
def test_short_training_beats_raw_pixels(method, sets, pixels, runs_dir):
    assert (
        run_cli("run", "--method", method, *[a for s in sets for a in ("--set", s)], *COMMON, "--runs-dir", runs_dir)
        == 0
    )
    trained = read_record(only_run(runs_dir))
    assert pixels["episode_digest"] == trained["episode_digest"]
    assert trained["accuracy"] > pixels["accuracy"] + 0.03, (trained["accuracy"], pixels["accuracy"])
