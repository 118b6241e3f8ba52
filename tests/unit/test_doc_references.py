"""Every document the repository refers to is in the repository.

Comments, docstrings and docs point readers at documents ("docs/interface.md section 6",
"see the README"). A pointer to a document that is not in the repository (a design note
kept elsewhere, a page renamed or not yet generated) leaves the next reader stranded, so
this test reads every text file in the scanned places and fails naming each file:line
whose reference does not resolve. A reference with a section number ("section 6",
"sections 3 and 4") must also name a section the document has, so that renumbering a
page cannot silently break its citations.

What counts as a reference:
- a path or name ending in ``.md`` (``docs/interface.md``, ``README.md``, ``../x.md``),
  resolved against the referring file's directory and the repository root; a bare name
  also resolves to a file of that name anywhere in the repository. URLs are ignored;
- a document named in capitals the way projects name their top-level documents
  (``CONTRACT``, ``ARCHITECTURE``, ``README``, ...), which resolves to a file of that
  name with or without an extension anywhere in the repository.

The lowercase word "contract" is not a reference: it also names the granule store's
contract suite in the tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Where references are looked for: directories (walked) and single files, from the root.
SCANNED = (
    "src",
    "tests",
    "benchmarks",
    "docs",
    "deploy",
    ".ci",
    "README.md",
    "Makefile",
    "pyproject.toml",
    "tox.ini",
)

#: Directories that hold no project text (caches, virtual environments, build output).
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "build", "dist", "venv"})

#: Capitalised names that projects give their top-level documents.
_DOCUMENT_WORDS = ("CONTRACT", "ARCHITECTURE", "README", "CHANGELOG", "CONTRIBUTING", "DESIGN", "SECURITY")

# A path-like token ending in ".md": letters, digits, "_", "-", ".", "/", "~" and ":" (so a
# URL is read whole and can be skipped). Not preceded by another token character, and
# "\b" after "md" keeps "hashlib.md5" and ".mdx" out.
_MD_PATH = re.compile(r"(?<![\w~:/.-])(?P<path>[\w~:/.-]*[\w-]\.md)\b")
_DOCUMENT_WORD = re.compile(r"\b(?P<word>" + "|".join(_DOCUMENT_WORDS) + r")\b(?!\.md\b)")
# "section 6", "sections 3 and 4", "sections 2, 3 or 5", right after the reference.
_SECTIONS = re.compile(r"^[\s,(]*sections?\s+(?P<numbers>\d+(?:(?:\s*,\s*|\s+and\s+|\s+or\s+)\d+)*)")
_NUMBER = re.compile(r"\d+")


@attrs.frozen
class Offence:
    """One reference that does not resolve, with where it is and why."""

    path: str
    line: int
    reference: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reference!r}: {self.problem}"


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_DIRS or name.endswith(".egg-info")


def _walk(root: Path, top: Path) -> Iterator[Path]:
    """Every file under ``top`` (a file or a directory), hidden and cache directories left out."""
    if top.is_file():
        yield top
        return
    for directory, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d))
        for name in sorted(files):
            yield Path(directory) / name


def _repository_files(root: Path) -> dict[str, Path]:
    """Each file name in the repository, with one file of that name (for references by bare name)."""
    files: dict[str, Path] = {}
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d))
        for name in sorted(names):
            files.setdefault(name, Path(directory) / name)
    return files


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    return None if "\x00" in text else text


def _resolve(root: Path, referrer: Path, reference: str, files: dict[str, Path]) -> Path | None:
    """The repository file ``reference`` (written in ``referrer``) points at, or None."""
    relative = reference.removeprefix("./")
    for base in (referrer.parent, root):
        candidate = (base / relative).resolve()
        if candidate.is_relative_to(root) and candidate.is_file():
            return candidate
    return files.get(relative) if "/" not in relative else None


def _section_numbers(document: Path) -> frozenset[int]:
    """The numbers of the document's numbered headings ("## 6. The hub" gives 6)."""
    text = _text(document) or ""
    return frozenset(int(m.group(1)) for m in re.finditer(r"(?m)^#{1,6}\s+(\d+)\.", text))


def _missing_sections(document: Path, rest_of_line: str) -> list[int]:
    """Section numbers cited right after a reference that ``document`` does not have."""
    cited = _SECTIONS.match(rest_of_line)
    if cited is None:
        return []
    have = _section_numbers(document)
    return [n for n in map(int, _NUMBER.findall(cited.group("numbers"))) if n not in have]


def _line_offences(
    root: Path, path: Path, number: int, line: str, files: dict[str, Path]
) -> Iterator[Offence]:
    shown = path.relative_to(root).as_posix()
    for match in _MD_PATH.finditer(line):
        reference = match.group("path")
        if "://" in reference or reference.startswith(("http:", "https:")):
            continue
        target = _resolve(root, path, reference, files)
        if target is None:
            yield Offence(shown, number, reference, "no such document in the repository")
            continue
        missing = _missing_sections(target, line[match.end() :])
        if missing:
            numbers = ", ".join(map(str, missing))
            yield Offence(shown, number, reference, f"the document has no section {numbers}")
    for match in _DOCUMENT_WORD.finditer(line):
        word = match.group("word")
        if not any(name == word or name.startswith(f"{word}.") for name in files):
            yield Offence(shown, number, word, "no such document in the repository")


def find_offences(root: Path, scanned: Iterable[str], exclude: Iterable[Path] = ()) -> list[Offence]:
    """Every reference under ``root``'s ``scanned`` places to a document that is not there."""
    root = root.resolve()
    excluded = {p.resolve() for p in exclude}
    files = _repository_files(root)
    offences: list[Offence] = []
    for place in scanned:
        top = root / place
        if not top.exists():
            continue
        for path in _walk(root, top):
            if path.resolve() in excluded:
                continue
            text = _text(path)
            if text is None:
                continue
            for number, line in enumerate(text.splitlines(), start=1):
                offences.extend(_line_offences(root, path, number, line, files))
    return offences


def test_every_referenced_document_is_in_the_repository() -> None:
    """No file cites a document, or a section of one, that the repository does not hold."""
    offences = find_offences(ROOT, SCANNED, exclude=[Path(__file__)])
    if offences:
        listing = "\n".join(map(str, offences))
        pytest.fail(
            f"{len(offences)} reference(s) to documents not in the repository:\n{listing}", pytrace=False
        )


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_check_flags_missing_documents_and_sections(tmp_path: Path) -> None:
    """A planted reference to a missing document, capitalised name or section is reported at its line."""
    root = _tree(
        tmp_path,
        {
            "docs/interface.md": "# Interface\n\n## 1. Commands\n\n## 2. Configuration\n",
            "src/a.py": (
                '"""See docs/interface.md section 2 and docs/interface.md sections 1 and 7."""\n'
                "# CONTRACT section 6 says so; docs/gone.md too.\n"
                "x = hashlib.md5()  # not a document; nor is https://example.org/README.md\n"
            ),
        },
    )
    expected = [
        "src/a.py:1: 'docs/interface.md': the document has no section 7",
        "src/a.py:2: 'docs/gone.md': no such document in the repository",
        "src/a.py:2: 'CONTRACT': no such document in the repository",
    ]
    assert expected == [str(o) for o in find_offences(root, ["src", "docs"])]


def test_the_check_accepts_references_that_resolve(tmp_path: Path) -> None:
    """Paths from the root or the referring file, bare names and capitalised names that exist all pass."""
    root = _tree(
        tmp_path,
        {
            "README.md": "The reference is docs/interface.md, section 1; see [it](docs/interface.md#1).\n",
            "docs/interface.md": "## 1. Commands\n\nSee the README and architecture.md.\n",
            "docs/architecture.md": "See interface.md sections 1.\n",
            "src/b.py": "# README.md, docs/interface.md section 1, ../docs/interface.md\n",
        },
    )
    assert [] == find_offences(root, ["README.md", "docs", "src"])
