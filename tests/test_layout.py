"""The package's shape, read from its source: no import cycles, front ends above torch and storage.

Every ``import`` of a genbot module counts, wherever it stands: at the top, under
``TYPE_CHECKING`` or inside a function. A function-level import is how genbot defers loading
something big (torch, Alembic, a front end's framework) and never a way around a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import genbot

ROOT = Path(genbot.__file__).parent
# Never imported by a front end, not even inside a function: front ends go through the service.
FORBIDDEN_IN_FRONTENDS = ("torch", "sqlalchemy", "alembic", "genbot.storage")


def module_names() -> dict[str, Path]:
    """Every genbot module by dotted name (a package by its own name)."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ["genbot", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(path: Path) -> Iterator[tuple[str, int]]:
    """(module, line) for every absolute import in a file, ``from a import b`` as ``a.b`` and ``a``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def import_graph() -> dict[str, set[str]]:
    """Module → the genbot modules it imports."""
    names = module_names()
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        for target, _ in imported(path):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules on it (first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_genbot_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_front_ends_import_neither_torch_nor_storage() -> None:
    offenders = []
    for name, path in module_names().items():
        if not name.startswith("genbot.frontends"):
            continue
        for target, line in imported(path):
            if any(target == bad or target.startswith(bad + ".") for bad in FORBIDDEN_IN_FRONTENDS):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/helpers.py (or genbot.testing), never in a test module."""
    tests = Path(__file__).parent
    offenders = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: from .x / from . import x
                names = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.removeprefix("tests.")] if node.module.startswith("tests.") else []
                names += [a.name for a in node.names] if node.module == "tests" else []
            elif isinstance(node, ast.Import):
                names = [a.name.removeprefix("tests.") for a in node.names if a.name.startswith("tests.")]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} imports {n}" for n in names if n.startswith(("test_", "conftest"))
            ]
    assert offenders == []
