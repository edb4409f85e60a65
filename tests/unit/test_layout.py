"""
The package's layout: imports flow one way between subpackages (contract at the bottom, the stages and the CLI at
the top), no module imports itself back through others, and every subpackage says what lives there and what it may
import. Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "halofleet"

# Bottom to top. A module may import from its own layer and the layers below it, never above.
LAYERS = ["contract", "models", "fleet", "box", "facts", "operations", "views", "deploy", "stages", "testing",
          "starter", "cli", "__main__"]
SUBPACKAGES = ["contract", "models", "fleet", "box", "facts", "operations", "views", "stages", "testing"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The halofleet modules ``name`` imports (``from pkg import module`` counts the module, else the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                       for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target == "halofleet" or target.startswith("halofleet.")}
    return {target for target in found if target != name}


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return -1  # the package itself: its __init__ holds only the version
    return LAYERS.index(parts[1])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer(graph):
    assert {name.split(".")[1] for name in graph if "." in name} <= set(LAYERS)


def test_no_upward_import(graph):
    upward = sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                    if layer(target) > layer(name))
    assert upward == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle(graph):
    assert cycles(graph) == []


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_an_upward_import_is_seen():
    assert layer("halofleet.contract.config") < layer("halofleet.models.specs") < layer("halofleet.views.verify")
    source = PACKAGE / "contract" / "config.py"
    assert "halofleet.models.specs" not in imports_of("halofleet.contract.config", source, set(all_modules()))


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_subpackage_says_what_lives_there_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 30, package
    assert "import" in doc, package
