"""The domain imports only the standard library, attrs and itself."""

from __future__ import annotations

import ast
import pathlib
import sys

import s2_downloader.domain

_ALLOWED_THIRD_PARTY = {"attrs"}


def _imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module)
    return roots


def test_domain_imports_only_stdlib_attrs_and_itself() -> None:
    """No module of domain/ imports an adapter, an entrypoint or a third-party library but attrs."""
    domain_dir = pathlib.Path(s2_downloader.domain.__file__).parent
    offenders = []
    for path in sorted(domain_dir.rglob("*.py")):
        for name in _imported_roots(path):
            top = name.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top in _ALLOWED_THIRD_PARTY
                or name == "s2_downloader.domain"
                or name.startswith("s2_downloader.domain.")
            )
            if not allowed:
                offenders.append(f"{path.name}: {name}")
    assert [] == offenders


def test_purity_check_notices_a_foreign_import(tmp_path: pathlib.Path) -> None:
    """The import walker sees plain, dotted and from-imports, so the purity test can fail."""
    module = tmp_path / "m.py"
    module.write_text("import psycopg\nfrom s2_downloader.adapters import sqs\nimport os.path\n")
    assert {"psycopg", "s2_downloader.adapters", "os.path"} == _imported_roots(module)
