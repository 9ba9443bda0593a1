"""The package's import graph has no cycle, counting imports inside functions too (so none of them
is there to dodge one), and every module can be imported first, on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"
PACKAGE = SRC / "proxycast"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "static" not in path.parts and path.name != "__main__.py"
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The proxycast modules ``path`` imports at run time, wherever the import statement is: a
    name imported from a package is an edge to the package (its ``__init__``), a submodule imported
    from it an edge to the submodule only."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("proxycast"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("proxycast"):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        for inner in ast.iter_child_nodes(node):
            visit(inner)

    visit(ast.parse(path.read_text()))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: _imports(path) - {"proxycast"} for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    "module",
    [
        "proxycast.upstream.provider",
        "proxycast.formats",
        "proxycast.formats.internal",
        "proxycast.http.loopguard",
        "proxycast.upstream.hints",
        "proxycast.core.exchange",
        "proxycast.config",
    ],
)
def test_a_module_imports_first(module: str) -> None:
    # a fresh interpreter: what this one imported already would hide an order that fails
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_the_layers_import_downwards() -> None:
    """``formats/`` is pure (it imports no I/O layer), and only the entry points import
    ``server/`` (nothing below it reaches up into the serving loop)."""
    graph = {name: _imports(path) for name, path in MODULES.items()}
    for name, imported in graph.items():
        if name.startswith("proxycast.formats"):
            outside = {
                m for m in imported if not m.startswith(("proxycast.formats", "proxycast.errors"))
            }
            assert outside == set(), name
        if not name.startswith("proxycast.server") and name not in ("proxycast", "proxycast.cli"):
            assert not any(m.startswith("proxycast.server") for m in imported), name
