"""Settings overrides, in one type: flat dotted keys (``train.lr``) ↔ nested trees (``{"train": {"lr": …}}``)
↔ command-line text (``train.lr=0.1``) ↔ grids of alternatives (``train.lr=0.1,0.01``).

``--set``, ``--config`` files, sweep grids and files, ``--where`` filters and ``harness tune`` all go
through ``Overrides``; values are typed once, as YAML reads them (``3``, ``0.5``, ``true``, ``[64,64]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml

from harness.errors import ConfigError


def parse_value(raw: str) -> Any:
    """A command-line value typed as YAML reads it (``3``, ``0.5``, ``true``, ``[64,64]``); text otherwise."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def format_value(value: Any) -> str:
    """The command-line text that ``parse_value`` reads back as ``value``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[: -len("\n...")].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


class Overrides(Mapping[str, Any]):
    """An ordered mapping of dotted keys to typed values; later sources win in ``merged``."""

    def __init__(self, flat: Mapping[str, Any] | None = None):
        self._flat = dict(flat or {})

    @classmethod
    def from_tree(cls, tree: Any, source: str = "config") -> Overrides:
        """``{"train": {"lr": 1}}`` → ``train.lr: 1`` (one level of groups, as config files hold them)."""
        if not isinstance(tree, dict):
            raise ConfigError(f"{source} must hold a mapping of config groups (bench, data, train, eval, method)")
        flat = {}
        for group, values in tree.items():
            if not isinstance(values, dict):
                raise ConfigError(
                    f"{source}: config group '{group}' must be a mapping of keys to values, got {values!r}"
                )
            flat.update({f"{group}.{key}": value for key, value in values.items()})
        return cls(flat)

    @classmethod
    def from_text(cls, items: Iterable[str], option: str = "--set", grouped: bool = True) -> Overrides:
        """``["train.lr=0.1"]`` → ``train.lr: 0.1``. ``grouped``: keys must be ``group.key``
        (``--where`` also accepts plain record fields such as ``head``)."""
        flat = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key or (grouped and not _is_dotted(key)):
                shape, example = (
                    ("group.key=value", "train.steps=500") if grouped else ("KEY=VALUE", "train.budget_minutes=3")
                )
                raise ConfigError(f"{option} expects {shape} (e.g. {example}), got '{item}'")
            flat[key] = parse_value(raw)
        return cls(flat)

    def tree(self) -> dict:
        """Nested by group: ``{"train": {"lr": 0.1}}`` (keys without a group stay at the top)."""
        tree: dict = {}
        for key, value in self._flat.items():
            group, dot, name = key.partition(".")
            if dot:
                tree.setdefault(group, {})[name] = value
            else:
                tree[key] = value
        return tree

    def text(self) -> list[str]:
        """Command-line form, ``["train.lr=0.1", ...]``, which ``from_text`` reads back unchanged."""
        return [f"{key}={format_value(value)}" for key, value in self._flat.items()]

    def merged(self, *others: Mapping[str, Any]) -> Overrides:
        """These settings, then each of ``others`` on top."""
        flat = dict(self._flat)
        for other in others:
            flat.update(other)
        return Overrides(flat)

    def grouped(self) -> Overrides:
        """Only the ``group.key`` settings (drops plain record fields such as ``head``)."""
        return Overrides({k: v for k, v in self._flat.items() if _is_dotted(k)})

    def __getitem__(self, key: str) -> Any:
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)

    def __len__(self) -> int:
        return len(self._flat)

    def __repr__(self) -> str:
        return f"Overrides({self._flat!r})"


def _is_dotted(key: str) -> bool:
    group, dot, name = key.partition(".")
    return bool(dot and group and name)


# ------------------------------------------------------------------------------------------ grids


class Grid(dict):
    """Dotted key → list of alternatives; the runs are their product (``points``)."""

    @classmethod
    def from_text(cls, items: Iterable[str], option: str = "--set") -> Grid:
        """``["train.lr=0.1,0.01", "train.steps=200"]`` → ``train.lr: [0.1, 0.01], train.steps: [200]``;
        each value typed exactly as ``harness run --set`` types it."""
        grid = cls()
        for item in items:
            key, sep, raw = item.partition("=")
            alternatives = split_alternatives(raw) if sep else [raw]
            if sep and len(alternatives) > 1 and any(not a.strip() for a in alternatives):
                raise ConfigError(f"{option} {item}: an empty value between commas; list the values as KEY=V1,V2")
            values = [Overrides.from_text([f"{key}={alt}" if sep else item], option) for alt in alternatives]
            grid[next(iter(values[0]))] = [next(iter(v.values())) for v in values]
        return grid

    @classmethod
    def from_mapping(cls, mapping: Any, source: str) -> Grid:
        """A sweep file's ``set:`` mapping: ``key: value`` (every run) or ``key: [v1, v2]`` (a grid).
        A setting whose value is itself a list is written as a list of lists: ``[[64, 64]]``."""
        if not isinstance(mapping, dict):
            raise ConfigError(f"{source}: 'set' must map group.key to a value or a list of values, got {mapping!r}")
        grid = cls()
        for key, value in mapping.items():
            if not isinstance(key, str) or not _is_dotted(key) or isinstance(value, dict):
                raise ConfigError(
                    f"{source}: set entries are group.key: value or group.key: [v1, v2] "
                    f"(e.g. train.lr: [0.001, 0.01]), got {key!r}: {value!r}"
                )
            grid[key] = value if isinstance(value, list) else [value]
            if not grid[key]:
                raise ConfigError(f"{source}: set {key}: an empty list of values")
        return grid

    def size(self) -> int:
        count = 1
        for values in self.values():
            count *= len(values)
        return count

    def varying(self) -> list[str]:
        """Keys with more than one alternative (what tells the grid's runs apart)."""
        return [key for key, values in self.items() if len(values) > 1]

    def points(self) -> Iterator[Overrides]:
        """Every combination of alternatives, in order."""
        keys = list(self)
        for values in itertools.product(*(self[key] for key in keys)):
            yield Overrides(dict(zip(keys, values)))


def split_alternatives(raw: str) -> list[str]:
    """Split a value at commas outside brackets and quotes: ``0.1,0.01`` → two values,
    ``[64,64],[32,32]`` → two lists, ``'a,b'`` → one string."""
    parts, current, depth, quote = [], [], 0, ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts
