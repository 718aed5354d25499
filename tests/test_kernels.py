"""CPU kernel pins (harness/kernels.py): set before torch starts, refused once torch runs other kernels,
named in the record, and the key that decides whether replay can be exact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import kernels
from harness.errors import HarnessError


def capability_under(pins: dict) -> str:
    code = (
        "from harness import kernels; kernels.pin(%r); import torch; "
        "print(torch.backends.cpu.get_cpu_capability())" % (pins,)
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_a_records_kernels_are_pinned_in_a_fresh_process():
    record = {"kernels": {"cpu_capability": "DEFAULT", "onednn_isa": "native"}}
    assert kernels.record_pins(record) == {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": None,
        "MKL_ENABLE_INSTRUCTIONS": None,
    }
    assert capability_under(kernels.record_pins(record)) == "DEFAULT"
    assert kernels.record_pins({"accuracy": 0.5}) is None  # an older record names no kernels


def test_other_kernels_once_torch_runs_are_an_error():
    import torch

    running = torch.backends.cpu.get_cpu_capability()
    other = "default" if running != "DEFAULT" else "avx2"
    with pytest.raises(HarnessError, match="fresh process"):
        kernels.pin({**kernels.level_pins("native"), "ATEN_CPU_CAPABILITY": other})
    assert capability_under(kernels.level_pins("portable")) in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_replay_is_exact_only_on_the_same_kernels():
    base = {
        "kernels": {
            "torch": "2",
            "cpu_capability": "AVX2",
            "onednn_isa": "AVX2",
            "threads": 2,
            "cpu": {"arch": "x86_64", "flags_digest": "a"},
        }
    }
    other_cpu = {"kernels": {**base["kernels"], "cpu": {"arch": "x86_64", "flags_digest": "b"}}}
    assert kernels.replay_key(base) == kernels.replay_key(other_cpu)  # pinned: the CPU's other flags do not count
    intel = {"kernels": {**base["kernels"], "cpu": {"arch": "x86_64", "vendor": "GenuineIntel", "flags_digest": "a"}}}
    assert kernels.replay_key(intel) != kernels.replay_key(base)  # but its vendor does (results/README.md, CPU kernels)
    native = {"kernels": {**base["kernels"], "onednn_isa": "native"}}
    native_other = {"kernels": {**native["kernels"], "cpu": {"arch": "x86_64", "flags_digest": "b"}}}
    assert kernels.replay_key(native) != kernels.replay_key(native_other)
    assert kernels.replay_key(
        {**base, "kernels": {**base["kernels"], "cpu_capability": "AVX512"}}
    ) != kernels.replay_key(base)
    assert kernels.replay_key({}) is None
    with pytest.raises(HarnessError, match="portable, native"):
        kernels.level_pins("fast")
