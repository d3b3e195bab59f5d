"""The package's layering, read from its source: no import cycles between its
modules (imports inside functions count; ``if TYPE_CHECKING:`` ones do not)
and no module using another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "session_ng"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _target(name: str) -> str | None:
    """The package module ``name`` is, or is in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def dependencies(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [_target(alias.name) for alias in node.names]
        elif node.module is not None and node.level == 0:
            # "from session_ng import events" names a module; "from
            # session_ng.events import x" the module x is in.
            targets = [
                _target(f"{node.module}.{alias.name}")
                if f"{node.module}.{alias.name}" in MODULES
                else _target(node.module)
                for alias in node.names
            ]
        else:
            targets = []
        found.update(t for t in targets if t is not None and t != name and t != "session_ng")
    return found


def test_no_module_of_the_package_is_in_an_import_cycle() -> None:
    graph = {name: dependencies(name) for name in MODULES}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[name]):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*path, dep], done)
        done.add(name)

    done: set[str] = set()
    for name in MODULES:
        if name not in done:
            visit(name, [name], done)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    modules: dict[str, str] = {}  # local name -> package module
    used: list[str] = []
    for node in _imports(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("session_ng")
        ):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    modules[alias.asname or alias.name] = full
                elif alias.name.startswith("_"):
                    used.append(f"{node.module}.{alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
        ):
            used.append(f"{modules[node.value.id]}.{node.attr}")
    assert used == []


def test_the_checks_see_the_modules() -> None:
    # The tests above would pass on an empty package.
    assert {"session_ng.events", "session_ng.backends.redis", "session_ng.ids"} <= set(MODULES)
    assert "session_ng.store.expiry" in dependencies("session_ng.events")
    assert "session_ng.ids" in dependencies("session_ng.resolvers")
