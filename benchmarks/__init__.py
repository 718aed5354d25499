"""Benchmark protocol definitions, read from the YAML files in this package.

Each file gives settings shared by its benchmarks at the top level and the benchmarks themselves
under ``benchmarks:``; a benchmark's own keys override the shared ones. The keys are the fields of
:class:`harness.protocol.BenchmarkSpec`.
"""

from importlib import resources

import yaml

from harness.protocol import BenchmarkSpec
from harness.registry import Registry

BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")

for _file in sorted(resources.files(__name__).iterdir(), key=lambda p: p.name):
    if _file.name.endswith(".yaml"):
        _tree = yaml.safe_load(_file.read_text())
        _shared = {k: v for k, v in _tree.items() if k != "benchmarks"}
        for _name, _own in _tree["benchmarks"].items():
            BENCHMARKS.add(_name, BenchmarkSpec(name=_name, **{**_shared, **_own}))


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered benchmark ``name`` (an unknown name is an error with the closest match)."""
    return BENCHMARKS.get(name)
