"""Bad command-line usage: exit 2 with one line that names the flag (docs/interface.md section 1)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A flag or argument with a bad value; ``flag`` is named first on the line."""

    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(f"{flag}: {problem}")
        self.flag = flag
        self.problem = problem
