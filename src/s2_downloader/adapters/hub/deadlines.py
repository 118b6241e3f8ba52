"""Deadlines: every hub call takes one, an absolute ``time.monotonic()`` instant.

Connect and read timeouts are cut to the time left (``client.py``), and the socket's
timeout is re-cut before every read of a body (``set_read_timeout``), so no blocking
step outlives the deadline, however slowly the hub trickles.
"""

from __future__ import annotations

import time

import urllib3

from s2_downloader.domain.errors import DeadlineExceeded

__all__ = ["CLOCK_SLACK", "set_read_timeout", "time_left", "timeout_seconds"]

#: How close to a deadline a timed-out read counts as having run out of time.
CLOCK_SLACK = 0.01
#: A urllib3 timeout left at its default is taken to be this long.
_DEFAULT_SECONDS = 60.0


def time_left(deadline: float | None, what: str) -> float | None:
    """Seconds until ``deadline`` (``None``: no deadline); ``DeadlineExceeded`` when none are left."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"out of time before {what}")
    return left


def timeout_seconds(value: object) -> float:
    """One of a ``urllib3.Timeout``'s values as seconds (its default sentinel: 60)."""
    return float(value) if isinstance(value, int | float) else _DEFAULT_SECONDS


def set_read_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    """Cut the socket's per-read timeout while a body is read (urllib3 set it at request time)."""
    connection = response.connection
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))
