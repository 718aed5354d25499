"""The grid of one ``harness sweep``: methods × benchmarks × settings × seeds, from the command line and
a sweep file (flags take precedence). The settings grid itself is ``harness.overrides.Grid``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import load_yaml, parse_seeds
from harness.errors import ConfigError
from harness.overrides import Grid, Overrides

SWEEP_FILE_KEYS = ("name", "methods", "benches", "seeds", "set", "config", "executor", "profile", "parallelism")


def names(value, what: str) -> list[str]:
    """``"a,b"`` or ``[a, b]`` → ``["a", "b"]``."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = [str(v).strip() for v in items if str(v).strip()]
    if not out:
        raise ConfigError(f"{what}: no names given")
    return list(dict.fromkeys(out))


@dataclass
class SweepSpec:
    """The grid of one ``harness sweep`` invocation."""

    methods: list[str]
    benches: list[str]
    seeds: list[int]
    grid: Grid  # group.key → alternatives; the grid is their product
    base: Overrides  # settings for every run (the --config file's)

    def __post_init__(self):
        self.grid, self.base = Grid(self.grid), Overrides(self.base)

    def default_name(self) -> str:
        from harness.benchmarks import is_file_ref

        digest = hashlib.sha256(
            json.dumps({**asdict(self), "base": dict(self.base)}, sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        benches = [Path(b).stem if is_file_ref(b) else b for b in self.benches]
        readable = f"{'+'.join(self.methods)}_{'+'.join(benches)}"
        return f"{readable[:60]}-{digest}"


def load_sweep_file(path: str) -> dict:
    tree = load_yaml(path)
    unknown = sorted(set(tree) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(SWEEP_FILE_KEYS)}")
    if tree.get("config"):
        tree["config"] = str(Path(path).parent / tree["config"])
    return tree


def sweep_spec(args, sweep_file: dict) -> SweepSpec:
    """The grid from the sweep file, with command-line flags taking precedence."""
    methods = args.methods or sweep_file.get("methods")
    benches = args.benches or sweep_file.get("benches")
    if not methods or not benches:
        raise ConfigError(
            "harness sweep needs methods and benchmarks: --methods a,b --benches x,y "
            "(or a sweep file with methods: and benches:); see `harness list`"
        )
    grid = Grid.from_mapping(sweep_file.get("set") or {}, args.file or "sweep file")
    grid.update(Grid.from_text(args.set or []))
    config = args.config or sweep_file.get("config")
    return SweepSpec(
        names(methods, "--methods"),
        names(benches, "--benches"),
        parse_seeds(args.seeds if args.seeds is not None else sweep_file.get("seeds", 0)),
        grid,
        Overrides.from_tree(load_yaml(config), str(config)) if config else Overrides(),
    )
