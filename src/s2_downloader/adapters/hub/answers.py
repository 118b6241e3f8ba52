"""What the hub's answers mean: a status as a ``FailureKind``, ``Retry-After``, a published MD5.

The table of docs/interface.md (the hub): 202 is offline, 429, 503 and DHuS's 403
"concurrent flows" are throttling (with their ``Retry-After``), 401 is refused
credentials, 404 is no such product, other 5xx are the hub's own trouble.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import TypeGuard

import urllib3

from s2_downloader.adapters.hub.bodies import SNIPPET, error_text
from s2_downloader.adapters.hub.urls import safe_url
from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.domain.retry import MAX_DELAY_SECONDS

__all__ = ["HTTP_DATE", "MAX_RETRY_AFTER", "failure", "is_md5", "parse_retry_after"]

#: The contract's cap on any back-off, Retry-After included: SQS's longest delay.
MAX_RETRY_AFTER = float(MAX_DELAY_SECONDS)
#: What an HTTP-date may look like before it is parsed: printable ASCII, not too long.
HTTP_DATE = re.compile(r"[\x20-\x7e]{1,64}", re.ASCII)

_CONCURRENT_FLOWS = re.compile(r"concurrent\s+flow", re.IGNORECASE)
_MD5 = re.compile(r"[0-9A-Fa-f]{32}", re.ASCII)


def is_md5(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an MD5 as hubs publish it: 32 hex digits, either case."""
    return isinstance(value, str) and _MD5.fullmatch(value) is not None


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP-date), capped.

    ``now`` is the current POSIX time, used for the HTTP-date form. ``None`` when the
    header is absent or unreadable: a bad hint is no hint, never an error.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # Any number of digits: past the cap it is the cap (int() would refuse 5000 digits).
        seconds = float(text) if len(text) <= 6 else MAX_RETRY_AFTER
    elif HTTP_DATE.fullmatch(text):
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    else:
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def failure(response: urllib3.BaseHTTPResponse, url: str, *, deadline: float | None = None) -> HubError:
    """The ``HubError`` an unwanted status stands for; consumes and releases ``response``."""
    status = response.status
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
    message = error_text(response, deadline)
    detail = f"HTTP {status} from {safe_url(url)}" + (f": {message[:SNIPPET]}" if message else "")
    if status == 202:
        return HubError(FailureKind.OFFLINE, detail, retry_after=retry_after)
    if status in (429, 503) or (status == 403 and _CONCURRENT_FLOWS.search(message)):
        return HubError(FailureKind.THROTTLED, detail, retry_after=retry_after)
    if status == 401:
        return HubError(FailureKind.UNAUTHORIZED, detail)
    if status == 404:
        return HubError(FailureKind.NOT_FOUND, detail)
    if status >= 500:
        return HubError(FailureKind.SERVER_ERROR, detail, retry_after=retry_after)
    return HubError(FailureKind.BAD_RESPONSE, detail)
