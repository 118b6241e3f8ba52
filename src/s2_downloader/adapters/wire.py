"""Message bodies on the wire: decoded with hard bounds, parsed by cattrs, validated by the domain.

A body comes from anyone who can write to the queue, so decoding it must cost little
and must never raise anything but ``BadRequest``: a body over ``MAX_BODY_BYTES`` is
refused before it is read, JSON nested deeper than ``MAX_DEPTH`` is refused before the
recursive decoder sees it (``json.loads`` recurses once per level and a few thousand
``[`` exhaust the stack), numbers too long to convert are refused by our own hook
instead of by an interpreter-wide digit limit, and duplicate keys are refused because
two readers of such a body can disagree on what it says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

import attrs
import cattrs

from s2_downloader.domain.errors import BadRequest
from s2_downloader.domain.request import DownloadRequest

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "decode_body",
    "parse_download_message",
    "peek_granule_id",
    "upload_message",
]

#: The largest body accepted, in UTF-8 bytes (SQS's own limit is 256 KiB).
MAX_BODY_BYTES: Final = 64 * 1024
#: The deepest nesting of arrays and objects accepted; a download message has depth 1.
MAX_DEPTH: Final = 32
#: No number in a download message is meant to be read; this bounds what converting one costs.
_MAX_NUMBER_DIGITS: Final = 400

# A JSON string token (the unrolled form, so matching is linear), and one bracket.
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET: Final = re.compile(r"[\[\]{}]")


@attrs.frozen(kw_only=True)
class _DownloadBody:
    id: str
    filename: str
    download_url: str
    checksum: str | None = None


def _strict_str(value: Any, _: type) -> str:
    # cattrs would turn 42 into "42"; docs/interface.md says a key of the wrong type is bad input.
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__}"
        raise TypeError(msg)
    return value


_converter = cattrs.Converter(forbid_extra_keys=False)
_converter.register_structure_hook(str, _strict_str)


def _nesting_depth(text: str) -> int:
    """The deepest bracket nesting of ``text``, counting brackets outside strings only.

    Over the part of ``text`` that is valid JSON (all the decoder ever recurses into)
    this is exact: outside strings a ``"`` always opens one, so the string tokens found
    here are the decoder's. Past that part the count may only be too high, which refuses
    a body that is not JSON anyway.
    """
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _number(kind: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        if len(text) > _MAX_NUMBER_DIGITS:
            msg = f"body holds a number of {len(text)} characters (at most {_MAX_NUMBER_DIGITS})"
            raise BadRequest(msg)
        return kind(text)

    return convert


def _refuse_constant(name: str) -> object:
    msg = f"body is not JSON: {name} is not a JSON value"
    raise BadRequest(msg)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            msg = f"body repeats the key {key[:80]!r}"
            raise BadRequest(msg)
        result[key] = value
    return result


def decode_body(body: str | bytes) -> dict[str, Any]:
    """The JSON object in ``body``, or ``BadRequest`` saying why not; nothing else is raised."""
    try:
        return _decode(body)
    except BadRequest:
        raise
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        # Belt and braces: the bounds above should leave nothing for these to catch.
        raise BadRequest(f"body is not JSON: {type(exc).__name__}") from None


def _decode(body: str | bytes) -> dict[str, Any]:
    if isinstance(body, bytes):
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"body is more than {MAX_BODY_BYTES} bytes")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not valid UTF-8") from None
    if not isinstance(body, str):
        raise BadRequest(f"body is a {type(body).__name__}, not text")
    # A character is at least one byte: most oversized bodies are refused without encoding.
    if len(body) > MAX_BODY_BYTES or len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise BadRequest(f"body is more than {MAX_BODY_BYTES} bytes")
    depth = _nesting_depth(body)
    if depth > MAX_DEPTH:
        raise BadRequest(f"body is nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        raw = json.loads(
            body,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(raw, dict):
        raise BadRequest(f"body is a JSON {type(raw).__name__}, not an object")
    return raw


def parse_download_message(body: str | bytes, check_url: Callable[[str], object]) -> DownloadRequest:
    """Turn a TO_DOWNLOAD message body into a DownloadRequest, or raise BadRequest saying why.

    ``check_url`` is the hub's rule for ``download_url`` (it raises ``BadRequest``).
    Whatever ``body`` holds, nothing but ``BadRequest`` leaves this function.
    """
    raw = decode_body(body)
    try:
        parsed = _converter.structure(raw, _DownloadBody)
    except Exception as exc:  # noqa: BLE001 - cattrs raises several kinds; all mean bad input
        details = (
            "; ".join(cattrs.transform_error(exc, path="body"))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        msg = f"body does not match the download message: {details}"
        raise BadRequest(msg) from None
    try:
        return DownloadRequest.create(
            id=parsed.id,
            filename=parsed.filename,
            download_url=parsed.download_url,
            checksum=parsed.checksum,
            check_url=check_url,
        )
    except BadRequest:
        raise
    except (ValueError, TypeError, UnicodeError, RecursionError) as exc:
        # A check that trips over odd text (a lone surrogate, say) has still refused it.
        raise BadRequest(f"download message refused: {type(exc).__name__}") from None


def peek_granule_id(body: str | bytes) -> str | None:
    """The body's ``id`` if it is a string, for logs and the display; ``None`` for any bad body."""
    try:
        value = decode_body(body).get("id")
    except BadRequest:
        return None
    return value if isinstance(value, str) else None


def upload_message(granule_id: str, filename: str) -> str:
    """The TO_UPLOAD message body for a verified granule."""
    return json.dumps({"id": granule_id, "filename": filename}, separators=(",", ":"))
