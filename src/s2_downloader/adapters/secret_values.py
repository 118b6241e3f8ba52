"""What a secret's value may hold: no control characters, and the value is never echoed.

A password or token written with a trailing newline (``echo`` into a secret, a JSON
editor) would be sent as it is and refused by the hub or the database with a puzzling
error, or worse, split a header. So a secret holding a control character is refused
where it is read, by a message naming where it came from and never showing the value.
Spaces are allowed: they may be part of a password.
"""

from __future__ import annotations

import unicodedata

__all__ = ["secret_problem"]


def secret_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret (without quoting it), or ``None`` when it can."""
    for position, character in enumerate(value, start=1):
        if unicodedata.category(character) == "Cc":
            # Only the position and the code point: the value itself stays unshown.
            return (
                f"holds a control character (U+{ord(character):04X} at position {position}),"
                " often a newline written with the secret; fix the secret (its value is not shown)"
            )
    return None
