"""The package's layout holds: no import cycle among its modules.

Every import statement counts, wherever it is: at module level, inside a function (a deferred
import is still a dependency, only hidden), and under ``if TYPE_CHECKING:`` (a type the module
names is a dependency of its design, even if not of its runtime). A package's ``__init__`` is a
module like the others; the implicit import of a parent package that any ``import a.b`` does is
not counted, since it follows from the folder layout, not from a choice in the code; so
``from . import _records`` depends on ``_records``, not on the package it sits in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grok_imagine_async

PACKAGE = Path(grok_imagine_async.__file__).parent
ROOT = PACKAGE.name


def _module_name(path: Path) -> str:
    parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    name = ".".join([*base, node.module] if node.module else base)
                else:
                    name = node.module or ""
                for alias in node.names:  # `from pkg import submodule` needs the submodule
                    submodule = f"{name}.{alias.name}"
                    targets.add(submodule if submodule in paths else name)
        graph[module] = {t for t in targets if t in paths and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
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


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_deferred_and_type_checking_imports() -> None:
    graph = _graph()
    # _client imports the scheduler inside generate_many(), and nowhere else.
    assert f"{ROOT}._scheduling.scheduler" in graph[f"{ROOT}._client"]
    assert f"{ROOT}._models" in graph[f"{ROOT}._errors"]


def test_no_import_cycle_among_the_package_modules() -> None:
    assert _cycles(_graph()) == []


def test_models_is_the_bottom_and_imports_nothing_of_ours() -> None:
    assert _graph()[f"{ROOT}._models"] == set()


def test_importing_a_submodule_from_its_package_is_no_cycle() -> None:
    graph = _graph()
    client = graph[f"{ROOT}._client"]  # it says `from . import _http`
    assert ROOT not in client
    assert f"{ROOT}._http" in client
