"""A download request: a message body that passed the rules for ids, filenames and hub URLs."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import attrs

from s2_downloader.domain.errors import BadRequest

__all__ = ["DownloadRequest", "UrlCheck", "validate_filename", "validate_id"]

_ID = re.compile(r"[A-Za-z0-9._-]{1,256}")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")

#: Raises ``BadRequest`` unless a request to the URL would reach the hub. The domain does
#: not parse URLs itself: the check belongs to the hub adapter, whose HTTP client is the
#: one parser that decides where a request goes.
UrlCheck = Callable[[str], object]


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
        id: str,  # noqa: A002 - the documented own key name
        filename: str,
        download_url: str,
        checksum: str | None,
        check_url: UrlCheck,
    ) -> DownloadRequest:
        """Validate each field, or raise ``BadRequest`` naming the first fault.

        ``check_url`` is the hub's rule for ``download_url``. A ``checksum`` that is not
        32 hex digits is ignored, not refused: the hub's own is fetched instead.
        """
        validate_id(id)
        validate_filename(filename)
        check_url(download_url)
        usable = checksum is not None and _MD5.fullmatch(checksum) is not None
        return cls(
            id=id,
            filename=filename,
            download_url=download_url,
            checksum=checksum.lower() if checksum is not None and usable else None,
        )
