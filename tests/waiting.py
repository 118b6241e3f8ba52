"""The one polling helper of the test suite: wait for a condition, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds have passed; whether it held.

    Callers assert on the result with a message saying what did not happen, so a slow
    machine fails with a reason rather than a later, puzzling assertion.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
