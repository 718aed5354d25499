"""A run's checkpoint (``checkpoint.pt``): written atomically, read back only as tensors and plain
containers (``weights_only=True``), so a doctored file cannot run code."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from harness import files
from harness.errors import HarnessError
from harness.method import Method
from harness.optim import Optimization

CHECKPOINT_KEYS = {"step", "train_seconds", "done", "model", "optimizers", "generator", "torch_rng", "cuda_rng"}
RESUME_FIX = "delete it to restart the run from step 0 (`harness run ... --resume` then trains it from scratch)"


def save_checkpoint(
    path: Path,
    method: Method,
    optimization: Optimization,
    step: int,
    seconds: float,
    generator: torch.Generator,
    done: bool,
    flops: dict[int, int] | None = None,
) -> None:
    state = {
        "flops": dict(flops or {}),  # the FLOPs of the steps counted so far (harness/compute.py)
        "step": step,
        "train_seconds": seconds,
        "done": done,
        "model": method.state_dict(),
        "optimizers": optimization.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    files.torch_save(state, path)


def read_checkpoint(path: Path, device: torch.device | str = "cpu", fix: str = "", mmap: bool = False) -> dict:
    """A checkpoint as ``save_checkpoint`` writes it, loaded with ``weights_only=True``: tensors and
    plain containers only, so a doctored file cannot run code. A missing, corrupt or foreign file is a
    HarnessError (``fix`` says what to do). ``mmap``: map the tensors instead of reading them (a cheap check)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path} is missing; {fix}")
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise HarnessError(
                f"cannot read {path}: it is truncated or corrupt ({str(exc).splitlines()[0]}); {fix}"
            ) from None
        found = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        raise HarnessError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, which "
            f"could run code when unpickled ({found or 'a non-tensor object'}); the harness never "
            f"writes such checkpoints, so this file did not come from it. {fix}"
        ) from None
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, KeyError, ... depending on where
        detail = (str(exc).splitlines() or [""])[0]
        raise HarnessError(
            f"cannot read {path}: it is truncated or corrupt ({type(exc).__name__}: {detail}); {fix}"
        ) from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        raise HarnessError(f"{path} is not a harness checkpoint (it lacks {', '.join(sorted(CHECKPOINT_KEYS))}); {fix}")
    return state


def load_checkpoint(path: Path, method: Method, optimization: Optimization, generator: torch.Generator) -> dict:
    """Restore model, optimisers, sampler generator and RNG states from ``path`` (see ``read_checkpoint``)."""
    state = read_checkpoint(path, method.env.device, RESUME_FIX)
    method.load_state_dict(state["model"])
    optimization.load_state_dict(state["optimizers"], RESUME_FIX)
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return state
