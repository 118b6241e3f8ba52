"""Where a URL would send a request: decided by the parser that makes the request.

urllib3 makes every hub request, so ``urllib3.util.parse_url`` decides a URL's origin.
A URL is also read with ``urllib.parse.urlsplit`` and refused when the two disagree on
scheme, host or port: a URL that two parsers read differently is one that some reader
(a log, a proxy, an older check) gets wrong, and refusing it closes the whole class of
confusions (``\\@``, ``%5C``, tabs, stray userinfo) instead of one example of it.

The rules (docs/interface.md, "URL rules"): http or https only; no userinfo; no
backslash, whitespace or control character anywhere; no ``%`` and nothing outside
ASCII in the authority; a host of letters, digits, dots and hyphens, or a bracketed
IPv6 literal; a port from 1 to 65535. Anything else raises ``BadRequest``.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.parse
from typing import TypeAlias

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from s2_downloader.domain.errors import BadRequest

__all__ = ["DEFAULT_PORTS", "MAX_URL_LENGTH", "Origin", "check_redirect", "check_url", "safe_url", "shown"]

#: (scheme, host, port): lowercase, IPv6 without brackets, default port filled in.
Origin: TypeAlias = tuple[str, str, int]

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Longer than any hub link; a bound so that a hostile URL costs little to refuse.
MAX_URL_LENGTH = 8192

_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_SHOWN = 120
_SAFE_URL_LENGTH = 200
# Everything between "//" and the last "@" before the path: user info, perhaps a password.
_USERINFO = re.compile(r"//[^/?#]*@")


def shown(url: str) -> str:
    """``url`` for messages and logs, even one refused as unreadable: cut short, no user info,
    and no query string or fragment (signed download links carry credentials there)."""
    before_query = re.split(r"[?#]", url, maxsplit=1)[0]
    return _USERINFO.sub("//<userinfo>@", before_query[:_SHOWN])


def safe_url(url: str) -> str:
    """``url`` fit for messages and logs: no user info, no query, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"[:_SAFE_URL_LENGTH]


def _refuse(url: str, why: str) -> BadRequest:
    # repr() escapes control characters, so the log line shows what was refused.
    return BadRequest(f"URL {shown(url)!r} refused: {why}")


def _forbidden_character(url: str) -> str | None:
    for ch in url:
        if ch == "\\":
            return "a backslash"
        if ch.isspace():
            return "whitespace"
        category = unicodedata.category(ch)
        # Cc: C0/C1 controls and DEL; Cf: invisible format characters (bidi marks, ZWJ);
        # Cs: lone surrogates; Zl/Zp/Zs: separators that isspace() may not list.
        if category in {"Cc", "Cf", "Cs"} or category.startswith("Z"):
            return f"the control or separator character U+{ord(ch):04X}"
    return None


def _host_origin(host: str, url: str) -> str:
    if host.startswith("["):
        literal = host[1:-1] if host.endswith("]") else ""
        try:
            return str(ipaddress.IPv6Address(literal)).lower()
        except ValueError as exc:
            raise _refuse(url, "a malformed IPv6 literal") from exc
    if not _HOSTNAME.fullmatch(host):
        raise _refuse(url, "a host that is not letters, digits, dots and hyphens")
    return host


def _split(url: str) -> tuple[urllib.parse.SplitResult, int | None]:
    """``urlsplit``'s reading of ``url`` and its port, held to the rules on scheme and authority."""
    try:
        split = urllib.parse.urlsplit(url)
        split_port = split.port
    except ValueError as exc:
        raise _refuse(url, f"unreadable ({exc})") from exc
    if split.scheme.lower() not in DEFAULT_PORTS:
        raise _refuse(url, "not an http or https URL")
    authority = split.netloc
    if not authority:
        raise _refuse(url, "no host")
    if "@" in authority:
        raise _refuse(url, "user info in the authority")
    if "%" in authority or not authority.isascii():
        raise _refuse(url, "percent-encoding or non-ASCII in the authority")
    return split, split_port


def check_url(url: str) -> Origin:
    """The origin a request to ``url`` would reach, or ``BadRequest`` when any rule is broken."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"URL of {len(url)} characters refused: longer than {MAX_URL_LENGTH}")
    if why := _forbidden_character(url):
        raise _refuse(url, why)
    split, split_port = _split(url)
    scheme = split.scheme.lower()
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError) as exc:
        raise _refuse(url, "unreadable by the HTTP client") from exc
    if parsed.auth is not None:
        raise _refuse(url, "user info in the authority")
    host = (parsed.host or "").lower()
    if not host:
        raise _refuse(url, "no host")
    origin_host = _host_origin(host, url)
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    split_host = (split.hostname or "").lower()
    if _is_ipv6(split_host):
        split_host = str(ipaddress.IPv6Address(split_host))
    agreed = (
        (parsed.scheme or "").lower() == scheme
        and origin_host == split_host
        and port == (split_port if split_port is not None else DEFAULT_PORTS[scheme])
    )
    if not agreed:
        raise _refuse(url, "parsers disagree on where it leads")
    if not 1 <= port <= 65535:
        raise _refuse(url, "a port outside 1-65535")
    return scheme, origin_host, port


def check_redirect(base: str, location: str) -> tuple[str, Origin]:
    """The absolute URL a ``Location`` header sends ``base`` to, and its origin; or ``BadRequest``.

    The raw header is held to the same characters as a URL first: ``urljoin`` (like
    ``urlsplit``) silently drops tabs and newlines, so ``//ev<TAB>il`` would otherwise
    be joined into a clean-looking ``//evil``.
    """
    if len(location) > MAX_URL_LENGTH:
        raise BadRequest(f"Location of {len(location)} characters refused: longer than {MAX_URL_LENGTH}")
    if why := _forbidden_character(location):
        raise _refuse(location, why)
    try:
        target = urllib.parse.urljoin(base, location)
    except ValueError as exc:  # an unclosed IPv6 bracket, a port out of range
        raise _refuse(location, f"unreadable ({exc})") from exc
    return target, check_url(target)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
