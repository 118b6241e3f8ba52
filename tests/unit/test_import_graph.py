"""No two modules of the package import each other, even lazily, and no entrypoint loads the testing room."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from collections.abc import Mapping

import s2_downloader

_PACKAGE = pathlib.Path(s2_downloader.__file__).parent


def _modules(package: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every module of ``package`` by its dotted name (a package by its own name, not ``__init__``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: pathlib.Path, modules: Mapping[str, pathlib.Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body, functions included."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module; ``from module import name``, the module.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {module for module in found if module in modules and module != name}


def _graph(package: pathlib.Path) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each back edge of a depth-first walk: empty exactly when the graph is acyclic."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        path.append(node)
        for target in sorted(graph[node]):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycle() -> None:
    """No chain of imports, lazy ones included, leads from a module of s2_downloader back to itself."""
    assert [] == _cycles(_graph(_PACKAGE))


def test_the_walk_finds_a_cycle_through_a_lazy_import(tmp_path: pathlib.Path) -> None:
    """A module importing another inside a function, which imports it back, is reported as a cycle."""
    package = tmp_path / "pkg"
    (package / "rooms").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "rooms" / "__init__.py").write_text("")
    (package / "rooms" / "cli.py").write_text("def demo():\n    from pkg.rooms.demo import run\n")
    (package / "rooms" / "demo.py").write_text("from . import cli\nimport pkg.rooms\n")
    assert [["pkg.rooms.cli", "pkg.rooms.demo", "pkg.rooms.cli"]] == _cycles(_graph(package))


def test_the_entrypoints_load_nothing_from_the_testing_room() -> None:
    """In a fresh interpreter, importing every entrypoint leaves the optional testing modules unloaded."""
    entrypoints = sorted(name for name in _modules(_PACKAGE) if name.startswith("s2_downloader.entrypoints."))
    script = (
        "import importlib, sys\n"
        f"for name in {entrypoints!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('s2_downloader.testing')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "[]" == result.stdout.strip()
