"""The code's shape: no import cycles among the harness's modules (function-level imports
included), ``harness.cli`` imported by nothing, no module over 500 lines, and methods that leave
optimisation to the runner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"harness": ROOT / "harness", "harness.methods": ROOT / "methods", "harness.benchmarks": ROOT / "benchmarks"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Module name → file, for every Python file the installed ``harness`` package holds."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if test is not None and (getattr(test, "id", None) or getattr(test, "attr", None)) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The harness modules ``path`` imports when it runs, anywhere in it (module level or inside functions;
    not the imports under ``if TYPE_CHECKING:``, which only annotations read)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, name, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from harness.store import RunStore\n    from . import files\n")
    assert imports(source, "harness.mod", {"harness.store", "harness.files"}) == {"harness.store", "harness.files"}


def test_the_import_walk_leaves_out_imports_for_annotations_only(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.store import RunStore\n"
        "else:\n    from harness import files\n"
    )
    assert imports(source, "harness.mod", {"harness.store", "harness.files"}) == {"harness.files"}


def test_no_import_cycles_among_the_harness_modules():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, " → ".join(cycle)


def test_nothing_imports_the_command_line():
    graph = import_graph()
    assert [name for name, targets in graph.items() if "harness.cli" in targets] == []


@pytest.mark.parametrize("name, path", sorted(modules().items()))
def test_no_module_is_over_500_lines(name, path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{name} ({path}) has more than {MAX_LINES} lines"


def test_methods_leave_optimisation_to_the_runner():
    pattern = re.compile(r"\.backward\(|\.step\(\)|zero_grad|torch\.optim\.")
    offenders = [
        f"{path.name}:{i}"
        for path in (ROOT / "methods").glob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


LAYERS_ABOVE_METHODS = (
    "harness.runner",
    "harness.resolve",
    "harness.rundir",
    "harness.cli",
    "harness.report",
    "harness.sweep",
    "harness.tune",
    "harness.reproduce",
)


def test_methods_import_nothing_from_the_layers_that_run_them():
    """A method is a model and its training step: what runs, resolves, stores or reports runs sits above it."""
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets if t.startswith(LAYERS_ABOVE_METHODS))
        for name, targets in graph.items()
        if name.startswith("harness.methods")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_layering_rule_sees_a_method_that_imports_the_runner(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("from harness.runner import execute\n")
    assert imports(source, "harness.methods.bad", {"harness.runner"}) == {"harness.runner"}


def test_the_readme_is_a_manual_under_5000_words():
    """The README is the user's manual; results, tuning logs and timings live in results/README.md."""
    assert len((ROOT / "README.md").read_text().split()) < 5000
