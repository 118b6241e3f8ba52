"""Where a request may go, and with what: the first URL and every redirect ``Location``.

Where a request goes is decided by ``check_url`` (urllib3's own parser, held to the URL
rules); credentials are attached only when that origin is a credentialed one, and a
redirect is followed only to an origin the hub allows. Redirects are followed by the
client, never by urllib3, because only the client knows where credentials may go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import urllib3

from s2_downloader.adapters.hub.bodies import discard
from s2_downloader.adapters.hub.urls import Origin, check_redirect, check_url, safe_url, shown
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError

__all__ = ["MAX_REDIRECTS", "REDIRECT_STATUSES", "redirect_target", "request_headers", "request_origin"]

#: Redirect hops followed before the hub is taken to be misbehaving.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_BASE_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "s2-downloader"}


def request_origin(url: str) -> Origin:
    """The origin a request to ``url`` reaches; ``HubError`` (``BAD_RESPONSE``) when it breaks a URL rule."""
    try:
        return check_url(url)
    except BadRequest as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {shown(url)!r}") from exc


def request_headers(
    origin: Origin,
    headers: Mapping[str, str] | None,
    authorization: str | None,
    credential_origins: frozenset[Origin],
) -> tuple[dict[str, str], bool]:
    """The headers for a request to ``origin``; whether they carry the credentials."""
    sent = {**_BASE_HEADERS, **(headers or {})}
    if authorization is None or origin not in credential_origins:
        return sent, False
    sent["Authorization"] = authorization
    return sent, True


def redirect_target(
    current: str,
    response: urllib3.BaseHTTPResponse,
    *,
    may_follow: Callable[[Origin], bool],
    deadline: float | None,
) -> tuple[str, Origin]:
    """Where a redirect ``response`` (released here) leads; ``HubError`` when it may not be followed."""
    location = response.headers.get("Location")
    discard(response, deadline)
    if not location:
        detail = f"HTTP {response.status} from {safe_url(current)} without a Location"
        raise HubError(FailureKind.BAD_RESPONSE, detail)
    try:
        target, origin = check_redirect(current, location)
    except BadRequest as exc:
        detail = f"redirect from {safe_url(current)} to an unusable Location {shown(location)!r}"
        raise HubError(FailureKind.BAD_RESPONSE, detail) from exc
    if not may_follow(origin):
        detail = f"redirect from {safe_url(current)} to {safe_url(target)}, outside the configured hub"
        raise HubError(FailureKind.BAD_RESPONSE, detail)
    return target, origin
