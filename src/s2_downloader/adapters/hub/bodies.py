"""Bodies read whole, and bounded: a JSON answer, an error's text, the rest of a body to drain.

Each has a size limit and an overall time limit as well as the per-read timeout, so a
hub that trickles cannot stretch a small read past its deadline. A product's body is
never read here: it is streamed (``stream.py``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from s2_downloader.adapters.hub.deadlines import CLOCK_SLACK, set_read_timeout
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError

__all__ = ["SNIPPET", "content_length", "discard", "error_text", "read_json", "why"]

#: The longest piece of a URL or an error message put in an error or a log line.
SNIPPET = 200

# Error bodies are read for the operator's benefit only; a body larger than this is
# not worth draining, so its connection is closed instead.
_SMALL_BODY = 64 * 1024
#: Longest an error body or a small body being drained may take: it is only worth a
#: reused connection or a log line, never an attempt's time.
_SMALL_BODY_SECONDS = 2.0
_JSON_LIMIT = 4 * 1024 * 1024
_READ_PIECE = 64 * 1024
# ASCII only: str.isdigit and \d accept digits int() refuses (superscripts) or reads
# unexpectedly (other scripts). 18 digits keep every value inside a 64-bit integer.
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)


def why(exc: BaseException) -> str:
    """A library error on one short line (urllib3's messages name the host and the OS error,
    never headers or bodies)."""
    return f"{type(exc).__name__}: {exc}"[:SNIPPET]


def content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    """The announced body size; ``None`` when absent; ``HubError`` when not ASCII digits."""
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        detail = f"Content-Length {text[:40]!r} is not a number"
        raise HubError(FailureKind.BAD_RESPONSE, detail)
    return int(text)


def _lenient_length(response: urllib3.BaseHTTPResponse) -> int | None:
    try:
        return content_length(response)
    except HubError:
        return None


def _read_until(
    response: urllib3.BaseHTTPResponse, limit: int, until: float, read_timeout: float
) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` bytes of the body, stopping at the monotonic instant ``until``.

    Returns the bytes and whether the body ended (or passed ``limit``) in time. Each
    read returns what has arrived, so a trickle cannot stretch this past ``until``;
    library errors propagate.
    """
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        left = until - time.monotonic()
        if left <= 0:
            return b"".join(parts), False
        set_read_timeout(response, min(read_timeout, left))
        try:
            piece = response.read1(min(_READ_PIECE, limit + 1 - size))
        except ReadTimeoutError:
            # The socket's timeout was cut to ``until``: timing out there is running out of time.
            if time.monotonic() >= until - CLOCK_SLACK:
                return b"".join(parts), False
            raise
        if not piece:
            return b"".join(parts), True
        parts.append(piece)
        size += len(piece)
    return b"".join(parts), True


def _small_body(response: urllib3.BaseHTTPResponse, deadline: float | None) -> tuple[bytes, bool]:
    """The body when it is announced small and arrives quickly; whether it all arrived."""
    length = _lenient_length(response)
    if length is None or length > _SMALL_BODY:
        return b"", False
    until = time.monotonic() + _SMALL_BODY_SECONDS
    if deadline is not None:
        until = min(until, deadline)
    try:
        return _read_until(response, _SMALL_BODY, until, _SMALL_BODY_SECONDS)
    except (HTTPError, OSError):
        return b"", False


def _release(response: urllib3.BaseHTTPResponse, *, complete: bool) -> None:
    if not complete:
        # Draining a large, unknown or slow body costs more than a new connection.
        response.close()
    response.release_conn()


def discard(response: urllib3.BaseHTTPResponse, deadline: float | None = None) -> None:
    """Give the connection back: drained when the rest is small and quick, else closed."""
    _, complete = _small_body(response, deadline)
    _release(response, complete=complete)


def error_text(response: urllib3.BaseHTTPResponse, deadline: float | None) -> str:
    """An error response's message (DHuS ``cause-message`` and a small body) on one line; consumes it."""
    cause = response.headers.get("cause-message", "")
    body, complete = _small_body(response, deadline)
    _release(response, complete=complete)
    return " ".join(f"{cause} {body.decode('utf-8', errors='replace')}".split())


def read_json(
    response: urllib3.BaseHTTPResponse, where: str, *, read_timeout: float, deadline: float | None
) -> Any:
    """The JSON body of ``response`` (a 200), released; raises ``HubError`` or ``DeadlineExceeded``.

    The whole body must arrive within one read timeout (a hub's JSON answer is a few
    kilobytes) and before ``deadline``.
    """
    try:
        length = content_length(response)
    except HubError:
        discard(response)
        raise
    if length is not None and length > _JSON_LIMIT:
        discard(response)
        raise HubError(FailureKind.BAD_RESPONSE, f"{length}-byte answer from {where} is too large")
    budget = time.monotonic() + read_timeout
    until = budget if deadline is None else min(budget, deadline)
    try:
        raw, complete = _read_until(response, _JSON_LIMIT, until, read_timeout)
    except ReadTimeoutError as exc:
        discard(response)
        raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"read timed out on {where}") from exc
    except (HTTPError, OSError) as exc:
        discard(response)
        detail = f"answer from {where} broke: {why(exc)}"
        raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
    if not complete:
        _release(response, complete=False)
        if deadline is not None and until == deadline:
            raise DeadlineExceeded(f"out of time reading the answer from {where}")
        detail = f"answer from {where} took longer than {read_timeout:g} s"
        raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
    if len(raw) > _JSON_LIMIT:
        _release(response, complete=False)
        raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is too large")
    response.release_conn()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is not JSON") from exc
