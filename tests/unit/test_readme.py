"""The README's state diagram is the transition table's."""

from __future__ import annotations

import pathlib

from s2_downloader.domain.lifecycle import mermaid_diagram

README = pathlib.Path(__file__).parents[2] / "README.md"


def test_readme_diagram_matches_the_transition_table() -> None:
    """The mermaid block in the README is exactly what the table draws."""
    text = README.read_text(encoding="utf-8")
    block = text.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert mermaid_diagram() == block
