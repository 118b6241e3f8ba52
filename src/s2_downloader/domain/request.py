"""A download request: a message body that passed the rules of CONTRACT sections 3 and 4."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Collection

import attrs

from s2_downloader.domain.errors import BadRequest

__all__ = ["DownloadRequest", "origin_of", "validate_filename", "validate_id"]

_ID = re.compile(r"[A-Za-z0-9._-]{1,256}")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def validate_id(value: str) -> str:
    """Return ``value`` if it is a safe granule id, else raise ``BadRequest``."""
    if not _ID.fullmatch(value) or value in {".", ".."}:
        msg = f"unsafe id {value[:80]!r}: want 1-256 characters of [A-Za-z0-9._-], not '.' or '..'"
        raise BadRequest(msg)
    return value


def validate_filename(value: str) -> str:
    """Return ``value`` if it is one safe path component, else raise ``BadRequest``."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        msg = f"unsafe filename {value[:80]!r}: not valid Unicode (a lone surrogate)"
        raise BadRequest(msg) from None
    if not 1 <= size <= 255:
        msg = f"unsafe filename: {size} bytes, want 1-255"
        raise BadRequest(msg)
    # Category Cc: C0 controls (NUL included), DEL and the C1 controls.
    if any(ch in "/\\" or unicodedata.category(ch) == "Cc" for ch in value):
        msg = f"unsafe filename {value[:80]!r}: a separator, NUL or control character"
        raise BadRequest(msg)
    if value.startswith("."):
        msg = f"unsafe filename {value[:80]!r}: starts with '.'"
        raise BadRequest(msg)
    return value


def origin_of(url: str) -> tuple[str, str, int]:
    """The (scheme, host, port) origin of ``url``, default ports filled in."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"malformed URL {url[:120]!r}: {exc}"
        raise BadRequest(msg) from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        msg = f"URL {url[:120]!r} is not an absolute http(s) URL"
        raise BadRequest(msg)
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


@attrs.frozen(kw_only=True)
class DownloadRequest:
    """What one download message asks for, known to be safe to act on."""

    id: str
    filename: str
    download_url: str
    checksum: str | None = None

    @classmethod
    def create(
        cls,
        *,
        id: str,  # noqa: A002 - the contract's own key name
        filename: str,
        download_url: str,
        checksum: str | None,
        allowed_origins: Collection[tuple[str, str, int]],
    ) -> DownloadRequest:
        """Validate each field as the contract says, or raise ``BadRequest`` naming the first fault."""
        validate_id(id)
        validate_filename(filename)
        if origin_of(download_url) not in allowed_origins:
            msg = f"download_url {download_url[:120]!r} is outside the configured hub origin"
            raise BadRequest(msg)
        if checksum is not None and not _MD5.fullmatch(checksum):
            msg = f"checksum {checksum[:80]!r} is not 32 hex digits"
            raise BadRequest(msg)
        return cls(
            id=id,
            filename=filename,
            download_url=download_url,
            checksum=checksum.lower() if checksum else None,
        )
