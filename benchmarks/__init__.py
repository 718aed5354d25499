"""Benchmark protocol definitions: the YAML files in this package, the files in the folders of
``$HARNESS_BENCHMARKS``, and benchmark files named by path (``--bench path/to/my-bench.yaml``).

Each file gives settings shared by its benchmarks at the top level and the benchmarks themselves
under ``benchmarks:``; a benchmark's own keys override the shared ones. The keys are the fields of
:class:`harness.protocol.BenchmarkSpec`. In a file outside the package ``description`` and ``family``
are optional and ``dataset:`` is a registered dataset's name or an image folder
(``{image_folder: ./images, split: splits.json}``, see :mod:`harness.data.imagefolder`), its paths
relative to the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from functools import lru_cache
from importlib import resources
from pathlib import Path

from harness.config import coerce, load_yaml, read_yaml
from harness.data import DATASETS
from harness.data.imagefolder import ImageFolderSpec
from harness.errors import ConfigError, HarnessError, UnknownNameError
from harness.protocol import BenchmarkSpec
from harness.registry import Registry

ENV = "HARNESS_BENCHMARKS"  # folders (os.pathsep-separated) of benchmark files that join the registry
FILE_REF = re.compile(r"(?P<path>.+\.ya?ml)(?::(?P<name>[^/:]+))?")
ROLES = ("train", "val", "test")
BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")  # the harness's own

for _file in sorted(resources.files(__name__).iterdir(), key=lambda p: p.name):
    if _file.name.endswith(".yaml"):
        _tree = read_yaml(_file.read_text(encoding="utf-8"), _file.name)
        _shared = {k: v for k, v in _tree.items() if k != "benchmarks"}
        for _name, _own in _tree["benchmarks"].items():
            BENCHMARKS.add(_name, BenchmarkSpec(name=_name, **{**_shared, **_own}))


def is_file_ref(ref: str) -> bool:
    """Whether ``ref`` names a benchmark file (ends in .yaml/.yml, optionally ``:NAME``, or has a path separator)."""
    return bool(FILE_REF.fullmatch(ref)) or os.sep in ref


def reference(name: str, file: str | None) -> str:
    """What finds a recorded benchmark again: its file and name (``file:name``), or its registered name."""
    return f"{file}:{name}" if file else name


def get_benchmark(ref: str, base: Path | None = None) -> BenchmarkSpec:
    """The benchmark ``ref`` names: a registered name (an unknown one is an error with the closest
    match) or a benchmark file, ``path.yaml`` (its only benchmark) or ``path.yaml:NAME``, relative to
    ``base`` (default: the working directory)."""
    match = FILE_REF.fullmatch(ref)
    if not is_file_ref(ref):
        return registry().get(ref)
    path = Path(base or ".") / (match["path"] if match else ref)
    specs = load_file(path)
    for spec in specs:
        _check_unique(BENCHMARKS, spec)
    names = [s.name for s in specs]
    if match and match["name"]:
        if match["name"] not in names:
            raise UnknownNameError("benchmark", match["name"], names, f"({path} defines those)")
        return specs[names.index(match["name"])]
    if len(specs) > 1:
        raise ConfigError(f"{path} defines {len(specs)} benchmarks ({', '.join(names)}); name one: {path}:{names[0]}")
    return specs[0]


def registry() -> Registry[BenchmarkSpec]:
    """Every registered benchmark: the harness's own and those of $HARNESS_BENCHMARKS's files. One name
    defined twice is an error."""
    merged: Registry[BenchmarkSpec] = Registry("benchmark")
    for spec in [*BENCHMARKS, *(s for path in env_files() for s in load_file(path))]:
        _check_unique(merged, spec)
        if spec.name not in merged:
            merged.add(spec.name, spec)
    return merged


def _check_unique(known: Registry[BenchmarkSpec], spec: BenchmarkSpec) -> None:
    other = known.get(spec.name) if spec.name in known else spec
    if other.source != spec.source:
        raise ConfigError(
            f"benchmark '{spec.name}' is defined twice: in {other.source or 'the harness itself'} and "
            f"in {spec.source}; rename one of them"
        )


def env_files() -> list[Path]:
    """The benchmark files in the folders of $HARNESS_BENCHMARKS."""
    found = []
    for entry in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{ENV}={entry}: not a folder; point it at a folder of benchmark files (*.yaml)")
        found += sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return found


def load_file(path: Path) -> list[BenchmarkSpec]:
    """The benchmarks a file defines (read again when it changes)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"benchmark file not found: {path} (a benchmark is a registered name, see `harness list "
            "benchmarks`, or a .yaml file)"
        )
    stat = path.stat()
    return list(_read_file(path, stat.st_mtime_ns, stat.st_size))


HINTS = typing.get_type_hints(BenchmarkSpec)
FILE_KEYS = sorted(f.name for f in dataclasses.fields(BenchmarkSpec) if f.name not in ("name", "source"))


@lru_cache(maxsize=None)
def _read_file(path: Path, mtime_ns: int, size: int) -> tuple[BenchmarkSpec, ...]:
    tree = load_yaml(path)
    entries = tree.get("benchmarks")
    if (
        not isinstance(entries, dict)
        or not entries
        or not all(isinstance(v, dict) or v is None for v in entries.values())
    ):
        raise ConfigError(
            f"{path}: a benchmark file holds shared settings at the top level and `benchmarks:`, a "
            "mapping of benchmark name → its own settings (like the harness's benchmarks/*.yaml)"
        )
    shared = {k: v for k, v in tree.items() if k != "benchmarks"}
    return tuple(_file_spec(str(name), {**shared, **(own or {})}, path) for name, own in entries.items())


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # a benchmark's name becomes part of run directory names


def _file_spec(name: str, settings: dict, path: Path) -> BenchmarkSpec:
    """A benchmark of a file outside the package, every value checked."""
    context = f"{path}: benchmark {name[:100]!r}"
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{context}: a benchmark name is letters, digits and . _ + - (at most 100, starting with a "
            "letter or digit, no '..'), since it becomes part of every run directory's name; rename it"
        )
    unknown, missing = sorted(set(settings) - set(FILE_KEYS)), sorted({"dataset", "image_size"} - set(settings))
    if unknown or missing:
        raise ConfigError(
            f"{context}: "
            + (f"unknown key(s) {', '.join(map(str, unknown))}; " if unknown else "")
            + (f"missing {', '.join(missing)}; " if missing else "")
            + f"valid keys: {', '.join(FILE_KEYS)}"
        )
    values: dict = {"description": "", "family": ""}
    for key, value in settings.items():
        if key == "dataset" and isinstance(value, dict):
            values[key] = ImageFolderSpec.parse(value, path.parent, f"{context}: dataset")
        elif key == "splits":
            if not isinstance(value, dict) or not set(value) <= set(ROLES):
                raise ConfigError(
                    f"{context}: splits maps {', '.join(ROLES)} to the dataset's split names, got {value!r}"
                )
            values[key] = {role: str(split) for role, split in value.items()}
        else:
            values[key] = coerce(value, HINTS[key], f"{context}: {key}")
    if isinstance(values["dataset"], str):
        try:
            DATASETS.get(values["dataset"])
        except HarnessError as exc:
            raise ConfigError(f"{context}: {exc} Or declare your images: dataset: {{image_folder: PATH}}") from None
    if values["image_size"] < 1:
        raise ConfigError(f"{context}: image_size must be a positive number of pixels, got {values['image_size']}")
    return BenchmarkSpec(name=name, source=str(path), **values)
