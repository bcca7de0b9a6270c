"""The shape of the code base a newcomer walks: small modules and no import cycles.

These read the source with `ast`; nothing is imported, so a cycle shows here even where Python
would tolerate it at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("twosv", "crm_plugin", "bench")
MAX_MODULE_LINES = 600


def product_modules() -> Iterator[tuple[str, Path]]:
    """Yield (dotted name, path) of every product module, migrations aside."""
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "migrations" in relative.parts:
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(product_modules())


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _module_level_imports(module: str, path: Path) -> set[str]:
    """Return the product modules that `module` imports when it is loaded.

    Imports inside functions and under ``if TYPE_CHECKING:`` run later or never; they are how a
    module reaches a neighbour without a cycle at load time, so they don't count.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, is_package)
            names.add(target)
            # `from twosv import services` imports the submodule twosv.services.
            names.update(f"{target}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _is_parent(candidate: str, module: str) -> bool:
    return module.startswith(candidate + ".")


def module_graph() -> dict[str, set[str]]:
    """Imports between modules; a package importing its own submodules is how it re-exports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph[module] = {
            target
            for target in _module_level_imports(module, path)
            if not _is_parent(module, target) and not _is_parent(target, module)
        }
    return graph


def area_graph() -> dict[str, set[str]]:
    """Imports between areas: `crm_plugin.api`, `crm_plugin.panel`, `twosv.services`, ..."""

    def area(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        graph.setdefault(area(module), set()).update(
            area(target) for target in targets if area(target) != area(module)
        )
    return graph


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_600_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(module_graph()) == []


def test_no_import_cycle_between_areas() -> None:
    """`crm_plugin.api` and `crm_plugin.panel`, or `twosv.services` and `twosv.tasks`, say."""
    assert _cycles(area_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
