"""CPU kernel levels: which vectorised kernels torch (ATen) and oneDNN use, pinned before torch starts.

torch and oneDNN pick their CPU kernels from the vector units they find (AVX2, AVX-512, ...), and the
kernels round differently, which the methods amplify: the same run gives other numbers on another CPU.
``train.kernels=portable`` (the default) pins both to AVX2 on x86, so a run made on any AVX2-or-better
x86 machine replays bit-identically on any other; ``native`` lets them choose. The pins are environment
variables read once, when torch first dispatches a kernel: ``pin`` sets them in the process that trains
(and its ``--procs`` and sweep workers inherit them), before torch is imported. Importing this module
does not import torch.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

from harness.errors import HarnessError

LEVELS = ("portable", "native")
PIN_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# The portable level per architecture (platform.machine()); elsewhere portable and native are the same.
PORTABLE = {
    arch: {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    for arch in ("x86_64", "AMD64")
}
NATIVE_ISA = "native"  # what the record says where oneDNN chose its own ISA

Pins = dict[str, "str | None"]  # variable → value (None: unset, the library chooses)


def level_pins(level: str) -> Pins:
    """The environment a run at ``level`` trains under on this machine."""
    if level not in LEVELS:
        raise HarnessError(f"train.kernels must be one of {', '.join(LEVELS)}, got '{level}'")
    chosen = PORTABLE.get(platform.machine(), {}) if level == "portable" else {}
    return {name: chosen.get(name) for name in PIN_VARIABLES}


def record_pins(record: dict) -> Pins | None:
    """The environment that replays a record's kernels (None: the record names none, being older)."""
    kernels = record.get("kernels") or {}
    if not kernels.get("cpu_capability"):
        return None
    isa, mkl = kernels.get("onednn_isa"), kernels.get("mkl_isa")
    return {
        "ATEN_CPU_CAPABILITY": kernels["cpu_capability"].lower(),
        "ONEDNN_MAX_CPU_ISA": None if isa in (None, NATIVE_ISA) else isa,
        "MKL_ENABLE_INSTRUCTIONS": None if mkl in (None, NATIVE_ISA) else mkl,
    }


def pin(pins: Pins) -> None:
    """Set ``pins`` for this process (and the processes it starts). Each library reads its variable once,
    lazily: ATen at its first vectorised kernel, oneDNN and MKL at their first call, which come only
    with computation, so torch may already be imported (resolving a configuration imports it). Once torch
    has computed, ATen's capability is fixed; asking then for another one is an error rather than a run
    under kernels it did not ask for."""
    current = {name: os.environ.get(name) for name in PIN_VARIABLES}
    if current == pins:
        return
    set_variables(pins)
    if "torch" in sys.modules:
        import torch

        running = torch.backends.cpu.get_cpu_capability()  # reads the variable unless a kernel already ran
        wanted = (pins.get("ATEN_CPU_CAPABILITY") or running).upper()
        if wanted != running.upper():
            set_variables(current)
            raise HarnessError(
                f"in this process torch already runs {running} kernels ({describe_pins(current)}); the run needs "
                f"{describe_pins(pins)}: start it in a fresh process (`harness run ...`), which pins them before "
                f"torch computes anything"
            )


def set_variables(pins: Pins) -> None:
    for name, value in pins.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def describe_pins(pins: Pins) -> str:
    return ", ".join(f"{name}={value or '(unset)'}" for name, value in pins.items())


def cpu_identity() -> dict:
    """Vendor, family, model and a digest of the flags of this machine's CPU (Linux's /proc/cpuinfo)."""
    fields = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "model name": "name", "flags": "flags"}
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in fields and fields[key] not in found:
                found[fields[key]] = value.strip()
            if not line.strip() and found:
                break  # the first processor's block
    except OSError:
        pass
    flags = found.pop("flags", "")
    return {
        "arch": platform.machine(),
        "vendor": found.get("vendor"),
        "family": found.get("family"),
        "model": found.get("model"),
        "name": found.get("name") or platform.processor() or None,
        "flags_digest": hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12] if flags else None,
    }


def describe(device, level: str) -> dict:
    """What exact replay of a run depends on besides its code and settings (the record's ``kernels``)."""
    import torch

    out = {
        "level": level,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or NATIVE_ISA,
        "mkl_isa": os.environ.get("MKL_ENABLE_INSTRUCTIONS") or NATIVE_ISA,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_identity(),
    }
    if torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        out["cuda"] = {
            "gpu": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}",
            "driver": cuda_driver(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        }
    return out


def cuda_driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def replay_difference(stored: dict, replayed: dict) -> str:
    """What keeps ``replayed`` from being a bit-identical replay of ``stored`` (their ``replay_key`` parts
    that differ), in words; a replay on the same pinned kernels of another CPU vendor says so."""
    names = ("torch", "CPU capability", "oneDNN ISA", "MKL ISA", "threads", "architecture", "CPU vendor", "processes")
    old, new = replay_key(stored), replay_key(replayed)
    if old is None:
        return "kernels not recorded"
    differ = [f"{name} {b} replaying {a}" for name, a, b in zip(names, old, new or ()) if a != b] or [
        "other CPU flags or GPU stack"
    ]
    if len(differ) == 1 and differ[0].startswith("CPU vendor"):
        return f"exact on the same vendor only ({differ[0]}, both at {old[1]} kernels)"
    return "other kernels (" + "; ".join(differ) + ")"


def replay_key(record: dict) -> tuple | None:
    """What must be equal for two runs of one configuration and seed to be bit-identical (None: the
    record names no kernels). The CPU's vendor counts even at a pinned level: pinned to AVX2, an Intel
    Xeon gave the main job 87.26% where AMD EPYC machines with and without AVX-512 gave 87.42% (results/README.md,
    "CPU kernels and exact replay"). oneDNN left to choose its ISA picks by the CPU's flags, so those count then."""
    kernels = record.get("kernels")
    if not kernels:
        return None
    cpu = kernels.get("cpu") or {}
    key = (
        kernels.get("torch"),
        kernels.get("cpu_capability"),
        kernels.get("onednn_isa"),
        kernels.get("mkl_isa"),
        kernels.get("threads"),
        cpu.get("arch"),
        cpu.get("vendor"),
        record.get("world_size") or 1,
    )
    if NATIVE_ISA in (kernels.get("onednn_isa"), kernels.get("mkl_isa")):
        key += (cpu.get("flags_digest"),)
    cuda = kernels.get("cuda")
    if cuda:
        key += tuple(sorted((k, str(v)) for k, v in cuda.items() if k != "driver"))
    return key
