"""docs/architecture.md stays true: its diagram is the transition table's, and the paths it names exist.

A path is anything in single backticks (outside fenced blocks) that contains a ``/`` or
ends in a file extension: it must exist from the repository root or from
``src/s2_downloader/`` (so ``adapters/sqs.py`` is the adapter), and a bare file name must
exist somewhere in the package, the tests, the benchmarks or ``deploy/``. A dotted name
starting with ``s2_downloader.`` must be a module of the package or an attribute of one.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from s2_downloader.domain.lifecycle import mermaid_diagram

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "src" / "s2_downloader"

#: Where a bare file name (``postgres.py``) may live.
_BARE_NAME_PLACES = (PACKAGE, ROOT / "tests", ROOT / "benchmarks", ROOT / "deploy")

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_PATH_LIKE = re.compile(r"^[\w./-]+$")
_EXTENSION = re.compile(r"\.(py|md|yaml|yml|sql|toml|ini|json)$")


def _mermaid_block(text: str) -> str:
    return text.split("```mermaid\n", 1)[1].split("\n```", 1)[0]


def _named_paths(text: str) -> list[str]:
    """The backticked paths and s2_downloader module names of ``text``, fenced blocks left out."""
    return [token for token in _CODE.findall(_FENCE.sub("", text)) if _names_a_path(token)]


def _names_a_path(token: str) -> bool:
    if token.startswith("s2_downloader."):
        return True
    return bool(_PATH_LIKE.match(token)) and ("/" in token or bool(_EXTENSION.search(token)))


def _module_exists(dotted: str) -> bool:
    """Whether ``dotted`` (a trailing ``()`` allowed) is a module of the package or an attribute of one."""
    parts = dotted.removesuffix("()").split(".")
    for length in range(len(parts), 1, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:length]))
        except ImportError:
            continue
        for attribute in parts[length:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def _path_exists(name: str) -> bool:
    if name.startswith("s2_downloader."):
        return _module_exists(name)
    relative = name.rstrip("/")
    if (ROOT / relative).exists() or (PACKAGE / relative).exists():
        return True
    return "/" not in relative and any(any(place.rglob(relative)) for place in _BARE_NAME_PLACES)


def test_the_diagram_is_the_transition_tables() -> None:
    """The mermaid block in docs/architecture.md is exactly what mermaid_diagram() draws."""
    expected = mermaid_diagram()
    actual = _mermaid_block(DOC.read_text(encoding="utf-8"))
    assert expected == actual


def test_every_path_named_exists() -> None:
    """Every module, file or directory docs/architecture.md names in backticks is in the repository."""
    expected: list[str] = []
    actual = [name for name in _named_paths(DOC.read_text(encoding="utf-8")) if not _path_exists(name)]
    assert expected == actual


def test_the_path_check_sees_a_missing_module() -> None:
    """Paths, bare names and module names that do not exist are reported, and existing ones are not."""
    text = (
        "`adapters/sqs.py`, `adapters/ftp.py`, `tests/unit/`, `postgres.py`, `nowhere.py`,\n"
        "`s2_downloader.domain.lifecycle.apply`, `s2_downloader.domain.gone`, `make unit`\n"
        "```\n`adapters/fenced.py`\n```\n"
    )
    expected = ["adapters/ftp.py", "nowhere.py", "s2_downloader.domain.gone"]
    actual = [name for name in _named_paths(text) if not _path_exists(name)]
    assert expected == actual
