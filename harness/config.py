"""Typed run configuration: groups of dataclasses, YAML / ``--set`` overrides, validation.

A run's configuration has the groups ``bench`` (the test protocol), ``data``, ``train``, ``eval``,
``method`` (the method's own dataclass) and, for methods that learn from augmented views, ``views``;
beside them ``log`` says where the run's curves go, which is no part of what the run computes.
Values are resolved in this order, later wins: dataclass defaults → benchmark definition → method
preset (``default`` then the benchmark's family) → the method entry's fixed settings → ``--config FILE.yaml``
→ ``--set key=value``.
Every value is type-checked; a field's ``metadata`` may bound it (``min``, ``max``, ``gt``) and mark it
``added`` later. Canonical form, migrations and the hash: ``harness/settings.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.errors import ConfigError, UnknownNameError


def at_least(low: float) -> dict:
    """Field metadata: the value must be >= low."""
    return {"min": low}


def positive() -> dict:
    """Field metadata: the value must be > 0."""
    return {"gt": 0}


ADDED = "added"  # field metadata key: see added()


def added(metadata: dict | None = None) -> dict:
    """Field metadata for a key added after runs were recorded (with its bounds, if any): hashed only
    when set otherwise, and read back at its default from runs stored without it (harness/settings.py)."""
    return {**(metadata or {}), ADDED: True}


@dataclass
class BenchConfig:
    """The test protocol: N-way K-shot episodes with Q queries per class, drawn from a seed."""

    ways: int = field(default=5, metadata=at_least(2))
    shots: int = field(default=1, metadata=at_least(1))
    queries: int = field(default=15, metadata=at_least(1))
    episodes: int = field(default=2000, metadata=at_least(1))
    episode_seed: int = field(default=0, metadata=at_least(0))


@dataclass
class DataConfig:
    """Where data lives and how much of the training split a run may use."""

    root: str = ""  # "" → $HARNESS_DATA or ~/.cache/fewshot-harness
    train_fraction: float = field(default=1.0, metadata={"gt": 0, "max": 1})
    image_size: int = field(default=0, metadata=at_least(0))  # 0 → the benchmark's size
    class_rotations: bool = False  # training classes ×4 by 90° rotations (Omniglot practice)
    holdout: str = ""  # a group (e.g. an Omniglot alphabet) held out of training as validation


@dataclass
class TrainConfig:
    """The shared training loop's budget and optimiser settings."""

    steps: int = field(default=1000, metadata=at_least(0))
    budget_minutes: float = field(default=0.0, metadata=at_least(0))  # 0 → no time limit
    # > 0: train for the steps this many FLOPs buy (harness/compute.py), counted on a probe step; replaces steps
    budget_flops: float = field(default=0.0, metadata=added(at_least(0)))
    lr: float = field(default=1e-3, metadata=positive())
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["constant", "cosine"] = "constant"
    batch_size: int = field(default=64, metadata=at_least(1))
    checkpoint_every: int = field(default=500, metadata=at_least(1))
    val_every: int = field(default=0, metadata=at_least(0))  # 0 → validate only at the end
    val_episodes: int = field(default=200, metadata=at_least(1))
    log_every: int = field(default=10, metadata=at_least(1))  # a short run logs a tenth of its steps (runner)
    clip_grad_norm: float = field(default=0.0, metadata=added(at_least(0)))  # 0 → no clipping
    # training under autocast (16: with gradient scaling)
    precision: Literal["32", "bf16", "16"] = field(default="32", metadata=added())
    compile: bool = field(default=False, metadata=added())  # torch.compile the method's modules for training
    # on several processes: batch norm over the global batch (harness/distributed.py)
    sync_batchnorm: bool = field(default=True, metadata=added())
    # the harness's batch norm (two-pass sums) instead of torch's kernel, whose CPU statistics of channels-last
    # activations round by up to ~1e-4: a run on N processes then equals the 1-process run to rounding
    exact_batchnorm: bool = field(default=False, metadata=added())
    # CPU kernels: portable pins torch and oneDNN to AVX2 on x86 (runs replay bit-identically on any AVX2-or-better
    # machine); native lets them pick the CPU's best (harness/kernels.py)
    kernels: Literal["portable", "native"] = field(default="portable", metadata=added())


def probability() -> dict:
    return {"min": 0, "max": 1}


@dataclass
class ViewConfig:
    """The ``views.*`` group of the methods that learn from augmented views: parameters named and
    defaulted as in lightly's ``SimCLRTransform`` (presets per benchmark family: ``presets/views.yaml``)."""

    views: Literal["tensor", "lightly"] = "tensor"  # batched on the device, or lightly's per-image PIL transforms
    min_scale: float = field(default=0.08, metadata={"gt": 0, "max": 1})
    hf_prob: float = field(default=0.5, metadata=probability())
    vf_prob: float = field(default=0.0, metadata=probability())
    rr_prob: float = field(default=0.0, metadata=probability())
    rr_degrees: float = field(default=0.0, metadata=at_least(0))  # 0 → rotations by 90° (lightly's default)
    cj_prob: float = field(default=0.8, metadata=probability())
    cj_strength: float = field(default=1.0, metadata=at_least(0))
    cj_bright: float = field(default=0.8, metadata=at_least(0))
    cj_contrast: float = field(default=0.8, metadata=at_least(0))
    cj_sat: float = field(default=0.8, metadata=at_least(0))
    cj_hue: float = field(default=0.2, metadata={"min": 0, "max": 0.5})
    random_gray_scale: float = field(default=0.2, metadata=probability())
    gaussian_blur: float = field(default=0.5, metadata=probability())
    sigmas: tuple[float, float] = (0.1, 2.0)
    solarization_prob: float = field(default=0.0, metadata=probability())


@dataclass
class EvalConfig:
    """How the test episodes are scored."""

    head: str = ""  # "" → the method's preferred head, else the benchmark's
    distance: Literal["euclidean", "cosine"] = "euclidean"
    batch_size: int = field(default=512, metadata=at_least(1))
    test: bool = True  # false: score only the validation split (blind tuning)
    logreg_steps: int = field(default=100, metadata=added(at_least(1)))  # the logreg head: full-batch Adam steps,
    logreg_lr: float = field(default=0.1, metadata=added(positive()))  # its learning rate
    logreg_l2: float = field(default=1e-3, metadata=added(at_least(0)))  # and its L2 penalty

    def head_settings(self) -> dict:
        """The settings of the ``head`` it names, as the head's constructor takes them."""
        if self.head == "logreg":
            return {"steps": self.logreg_steps, "lr": self.logreg_lr, "l2": self.logreg_l2}
        return {"distance": self.distance}


@dataclass
class LogConfig:
    """The ``log.*`` group: where a run's curves and scores are logged (harness/loggers/). It changes no
    result, so it is not stored in ``config.yaml``, not hashed and not carried to a re-run: each command
    that starts or resumes a run (``run``, ``sweep`` and its tasks, ``tune``) takes it from its own settings."""

    loggers: tuple[str, ...] = ("tensorboard",)  # any of tensorboard, wandb, mlflow; [] writes only train_log.csv
    wandb_project: str = "fewshot-harness"
    wandb_entity: str = ""  # "" → your default W&B entity
    wandb_mode: Literal["offline", "online"] = "offline"  # offline: files in <run dir>/wandb/ for `wandb sync`
    mlflow_uri: str = ""  # "" → a file store beside the run directory: <runs dir>/mlruns
    mlflow_experiment: str = "fewshot-harness"


SEED_MAX = 2**63 - 1  # training seeds: 0..SEED_MAX (a signed 64-bit integer, as torch and numpy store them)
MAX_SWEEP_RUNS = 10_000  # runs one sweep may plan (methods × benchmarks × settings × seeds)

GROUPS = ("bench", "data", "train", "eval", "method", "views")  # what a run computes with: stored and hashed
LOG_GROUP = "log"  # settable like the others, but stored and hashed nowhere (LogConfig)


@dataclass
class RunConfig:
    """A fully resolved run configuration (without the seed: hash + seed identify a run)."""

    method_name: str
    benchmark: str
    bench: BenchConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    method: Any
    views: ViewConfig | None = None  # only for methods that learn from augmented views
    log: LogConfig = field(default_factory=LogConfig)  # where its curves go: not in groups() or to_dict()

    def groups(self) -> list[str]:
        """The groups this run computes with (``views`` only where the method uses views): what
        ``config.yaml`` stores and the config hash covers."""
        return [name for name in GROUPS if getattr(self, name) is not None]

    def group(self, name: str) -> Any:
        if name not in (*GROUPS, LOG_GROUP):
            raise UnknownNameError("config group", name, (*GROUPS, LOG_GROUP))
        if getattr(self, name) is None:
            raise ConfigError(
                f"{self.method_name} has no {name}.* settings: only methods that learn from augmented "
                f"views do; remove the {name}.* override"
            )
        return getattr(self, name)

    def to_dict(self) -> dict:
        """The stored configuration (``config.yaml``): the groups of ``groups()``, without ``log``."""
        out: dict[str, Any] = {"method_name": self.method_name, "benchmark": self.benchmark}
        for name in self.groups():
            out[name] = dataclasses.asdict(self.group(name))
        return out


# ---------------------------------------------------------------- reading overrides


MAX_YAML_BYTES = 1_000_000
MAX_TEXT = 1000  # characters of a text setting (a name, a path, an alphabet)
MAX_YAML_NODES = 100_000  # counted with every alias expanded: a 325-byte alias bomb expands to billions


def yaml_nodes(node, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for with its aliases expanded (memoised: linear in the document)."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts once
        children = node.value if isinstance(node.value, list) else []
        sizes[id(node)] = 1 + sum(
            yaml_nodes(c, sizes) for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))
        )
    return sizes[id(node)]


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: 7× faster


def read_yaml(text: str, source: str):
    """Parse YAML text strictly: a duplicate key or an expansion of more than ``MAX_YAML_NODES`` nodes is
    a ConfigError naming ``source`` (and the line), as is bad syntax."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is {len(text):,} characters; YAML inputs are at most {MAX_YAML_BYTES:,}")
    loader = SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if yaml_nodes(node, {}) > MAX_YAML_NODES:
            raise ConfigError(
                f"{source} expands to more than {MAX_YAML_NODES:,} values through its aliases (*name); "
                "write the values out or use fewer aliases"
            )
        for mapping in (n for n in walk_nodes(node, set()) if isinstance(n, yaml.MappingNode)):
            seen = {}
            for key, _ in mapping.value:
                if isinstance(key, yaml.ScalarNode) and key.value in seen:
                    raise ConfigError(
                        f"{source}, line {key.start_mark.line + 1}: key '{key.value[:60]}' is given twice "
                        f"(first on line {seen[key.value] + 1}); YAML would keep only the last, so merge them"
                    )
                if isinstance(key, yaml.ScalarNode):
                    seen[key.value] = key.start_mark.line
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {str(exc)[:500]}") from None
    finally:
        loader.dispose()


def walk_nodes(node, seen: set[int]):
    """Every node of a composed YAML document once (aliases are the same node)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node
    if isinstance(node.value, list):
        for item in node.value:
            for child in item if isinstance(item, tuple) else (item,):
                yield from walk_nodes(child, seen)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a clear error for a missing file, bad encoding, bad syntax, a duplicate
    key or an alias bomb (``read_yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of config groups (bench, data, train, eval, method)")
    return tree


# ---------------------------------------------------------------- applying overrides


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if typing.get_origin(tp) in (tuple, list):
        items = [arg for arg in typing.get_args(tp) if arg is not Ellipsis]
        return f"a list of {_type_name(items[0])} in brackets, e.g. [a, b]" if items else "a list, e.g. [a, b]"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in that type."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key} must be {_type_name(tp)}, got {repr(value)[:200]}")
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in options:
            value = str(value)  # --set train.precision=16 reads as a number
        if value not in options:
            raise bad
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
            return tuple(coerce(v, a, key) for v, a in zip(value, args))
        item = args[0] if args else Any
        return origin(coerce(v, item, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise bad
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as text
            value = float(value)
        except ValueError:
            raise bad from None
    if tp in (int, float) and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad
        if len(str(value)) > MAX_TEXT:
            raise ConfigError(f"{key} is {len(str(value)):,} characters long; a setting's text is at most {MAX_TEXT}")
        return str(value)
    return value


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def set_value(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set ``group.key`` on ``cfg`` after checking the key exists and the type fits."""
    group_name, _, key = dotted.partition(".")
    group = cfg.group(group_name)
    fields = _fields(group)
    if key not in fields:
        raise UnknownNameError("config key", dotted, [f"{group_name}.{k}" for k in fields])
    hints = typing.get_type_hints(type(group))
    setattr(group, key, coerce(value, hints[key], dotted))


def check_bounds(cfg: RunConfig) -> None:
    """Reject values outside the bounds declared in field metadata."""
    for group_name in cfg.groups():
        group = cfg.group(group_name)
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            meta, key = f.metadata, f"{group_name}.{f.name}"
            if "min" in meta and value < meta["min"]:
                raise ConfigError(f"{key} must be >= {meta['min']}, got {value}")
            if "gt" in meta and value <= meta["gt"]:
                raise ConfigError(f"{key} must be > {meta['gt']}, got {value}")
            if "max" in meta and value > meta["max"]:
                raise ConfigError(f"{key} must be <= {meta['max']}, got {value}")


def check_seed(seed: Any) -> int:
    """A training seed as an int, or a ConfigError that states the valid range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be an integer from 0 to {SEED_MAX} (2**63 - 1), got {seed!r}")
    return seed


def parse_seeds(value) -> list[int]:
    """``0-4`` → [0..4]; ``0,2,5``; ``0-2,7``; also an int or a YAML list of those. Seeds lie in
    0..SEED_MAX, and ranges are counted before they are expanded: at most MAX_SWEEP_RUNS seeds."""
    items = value if isinstance(value, list) else str(value).split(",")
    ranges: list[tuple[int, int]] = []
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
        if isinstance(item, bool) or not match:
            raise ConfigError(f"seeds: '{text}' is not a seed or an ascending range; use e.g. 0-4, 0,2,5 or 0-2,7")
        if (
            any(len(bound) > len(str(SEED_MAX)) for bound in match.groups() if bound)
            or int(match[2] or match[1]) > SEED_MAX
        ):
            raise ConfigError(f"seeds: '{text}' is out of range; seeds are integers from 0 to {SEED_MAX}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ConfigError(f"seeds: '{text}' is not a seed or an ascending range; use e.g. 0-4, 0,2,5 or 0-2,7")
        ranges.append((low, high))
    count = sum(high - low + 1 for low, high in ranges)
    if count > MAX_SWEEP_RUNS:
        raise ConfigError(
            f"seeds: {value} is {count:,} seeds, and one sweep plans at most {MAX_SWEEP_RUNS:,} runs "
            f"(methods × benchmarks × settings × seeds); split it into smaller sweeps"
        )
    return list(dict.fromkeys(seed for low, high in ranges for seed in range(low, high + 1)))
