"""Message bodies on the wire: parsed with a private cattrs converter, validated by the domain."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import attrs
import cattrs

from s2_downloader.domain.errors import BadRequest
from s2_downloader.domain.request import DownloadRequest

__all__ = ["parse_download_message", "upload_message"]


@attrs.frozen(kw_only=True)
class _DownloadBody:
    id: str
    filename: str
    download_url: str
    checksum: str | None = None


def _strict_str(value: Any, _: type) -> str:
    # cattrs would turn 42 into "42"; the contract says a key of the wrong type is bad input.
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__}"
        raise TypeError(msg)
    return value


_converter = cattrs.Converter(forbid_extra_keys=False)
_converter.register_structure_hook(str, _strict_str)


def parse_download_message(body: str, allowed_origins: Collection[tuple[str, str, int]]) -> DownloadRequest:
    """Turn a TO_DOWNLOAD message body into a DownloadRequest, or raise BadRequest saying why."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"body is not JSON: {exc}"
        raise BadRequest(msg) from exc
    if not isinstance(raw, dict):
        msg = f"body is a JSON {type(raw).__name__}, not an object"
        raise BadRequest(msg)
    try:
        parsed = _converter.structure(raw, _DownloadBody)
    except Exception as exc:
        details = (
            "; ".join(cattrs.transform_error(exc, path="body"))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        msg = f"body does not match the download message: {details}"
        raise BadRequest(msg) from exc
    return DownloadRequest.create(
        id=parsed.id,
        filename=parsed.filename,
        download_url=parsed.download_url,
        checksum=parsed.checksum,
        allowed_origins=allowed_origins,
    )


def upload_message(granule_id: str, filename: str) -> str:
    """The TO_UPLOAD message body for a verified granule."""
    return json.dumps({"id": granule_id, "filename": filename}, separators=(",", ":"))
