"""One registry pattern for methods, benchmarks, heads, backbones and datasets.

A registry maps names to entries. Code entries are *lazy*: they name ``module:attribute`` and are
imported on first use, so listing what exists never imports torch or the method libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from harness.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered piece of code: imported from ``target`` (``"module:attr"``) when loaded."""

    name: str
    target: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Names → entries, with errors that list the valid names and the closest match."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str, setting: str = "") -> T:
        """The entry called ``name``; else a closest-match error, naming the ``setting`` that chose it."""
        try:
            return self._entries[name]
        except KeyError:
            hint = f"Set {setting} to one of them." if setting else ""
            raise UnknownNameError(self.kind, name, self._entries, hint) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
