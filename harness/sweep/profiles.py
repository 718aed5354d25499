"""Where runs go: the executor (``slurm`` when ``sinfo`` answers, else ``local``) and SLURM profiles
(``--profile NAME``: ``slurm/profiles/NAME.yaml``, ``$HARNESS_PROFILES/NAME.yaml`` or a YAML file) as
submitit ``SlurmExecutor`` parameters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.errors import ConfigError, HarnessError

EXECUTORS = ("slurm", "local")
# Profile keys: type, and the submitit SlurmExecutor parameter each sets (None: used otherwise).
PROFILE_KEYS = {
    "description": (str, None),
    "partition": (str, "partition"),
    "time_min": (int, "time"),
    "cpus_per_task": (int, "cpus_per_task"),
    "mem_gb": (float, "mem"),
    "gpus_per_node": (int, "gpus_per_node"),
    "nodes": (int, "nodes"),
    "tasks_per_node": (int, "ntasks_per_node"),  # > 1 (or nodes > 1): each run is a multi-process job
    "constraint": (str, "constraint"),
    "account": (str, "account"),
    "qos": (str, "qos"),
    "parallelism": (int, "array_parallelism"),
    "signal_delay_s": (int, "signal_delay_s"),
    "max_timeouts": (int, None),
    "setup": (list, "setup"),
    "sbatch": (dict, "additional_parameters"),
}
# Used where neither the profile nor the command line says otherwise (submitit's own time default
# of 5 minutes would cut most training runs).
PROFILE_DEFAULTS = {"time_min": 60, "parallelism": 16, "max_timeouts": 3, "signal_delay_s": 90}


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` is looked up: $HARNESS_PROFILES, ./slurm/profiles, and the
    harness checkout's slurm/profiles."""
    checkout = Path(__file__).resolve().parents[2]
    dirs = [Path(os.environ["HARNESS_PROFILES"])] if os.environ.get("HARNESS_PROFILES") else []
    dirs += [Path.cwd() / "slurm" / "profiles", checkout / "slurm" / "profiles"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def load_profile(name: str | None) -> tuple[dict, str]:
    """(validated profile with defaults filled in, where it came from). ``name`` is a profile name or
    a YAML file; None gives the defaults."""
    from harness.config import load_yaml

    if name is None:
        return dict(PROFILE_DEFAULTS), "defaults"
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        candidates = [d / f"{name}.yaml" for d in profile_dirs()]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(
                f"unknown profile '{name}'. Profiles: {', '.join(known) or '(none)'} "
                f"(looked in {', '.join(map(str, profile_dirs()))}); or pass a YAML file"
            )
    tree = load_yaml(path)
    profile = dict(PROFILE_DEFAULTS)
    for key, value in tree.items():
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{path}: unknown profile key '{key}'. Valid keys: {', '.join(PROFILE_KEYS)}")
        kind = PROFILE_KEYS[key][0]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
        may_be_zero = key in ("gpus_per_node", "max_timeouts", "signal_delay_s")
        if kind in (int, float) and (value < 0 or (value == 0 and not may_be_zero)):
            raise ConfigError(f"{path}: {key} must be positive, got {value}")
        if key == "setup" and not all(isinstance(line, str) for line in value):
            raise ConfigError(f"{path}: setup must be a list of shell lines, got {value!r}")
        profile[key] = value
    return profile, str(path)


def processes_per_run(profile: dict) -> int:
    """How many processes each run of a SLURM sweep is split over (nodes × tasks per node)."""
    return profile.get("nodes", 1) * profile.get("tasks_per_node", 1)


def slurm_parameters(profile: dict, sweep_name: str) -> dict:
    """The profile as submitit ``SlurmExecutor.update_parameters`` arguments."""
    params = {"job_name": f"harness-{sweep_name}"}
    for key, value in profile.items():
        target = PROFILE_KEYS[key][1]
        if target == "mem":
            value = f"{int(value)}GB" if value == int(value) else f"{int(value * 1024)}MB"
        if target:
            params[target] = value
    return params


def slurm_answers() -> tuple[bool, str]:
    """Whether ``sinfo`` reaches a controller, and what it said."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return False, f"SLURM_CONF names a missing file: {conf}"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=15)
    except FileNotFoundError:
        return False, "sinfo is not installed"
    except subprocess.TimeoutExpired:
        return False, "sinfo did not answer within 15 s"
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def choose_executor(requested: str | None, profile_name: str | None) -> str:
    """``slurm`` or ``local``: as requested, else slurm only when ``sinfo`` answers."""
    if requested not in (None, *EXECUTORS):
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got '{requested}'")
    if requested == "local" and profile_name:
        raise ConfigError("--profile configures SLURM jobs; drop it with --executor local (use --parallelism)")
    if requested == "local":
        return "local"
    answers, said = slurm_answers()
    if answers:
        return "slurm"
    if requested == "slurm" or profile_name:
        raise HarnessError(
            f"no SLURM controller answers ({said}). Check SLURM_CONF, or try the local cluster: "
            f"bash slurm/local-cluster.sh start && . /tmp/harness-slurm/env.sh; "
            f"or run here with --executor local"
        )
    return "local"
