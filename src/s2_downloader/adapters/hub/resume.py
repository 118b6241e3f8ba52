"""Opening a product at an offset: ``Range`` and ``If-Range`` out, what a 200, 206 or 416 means back.

The resume rules of docs/interface.md: a partial is resumed only when the hub answers
206 with exactly the range asked for; with a validator (what an earlier stream's
``validator`` was) the resume is conditional, and a hub whose product changed answers
200 with the whole new product, which starts from byte 0 (the stream's ``offset`` says
so). Any other answer to a resume restarts from byte 0.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Mapping
from typing import Protocol

import attrs
import urllib3

from s2_downloader.adapters.hub.answers import HTTP_DATE, failure
from s2_downloader.adapters.hub.bodies import content_length, discard
from s2_downloader.adapters.hub.stream import ProductResponseStream
from s2_downloader.adapters.hub.urls import safe_url
from s2_downloader.domain.errors import FailureKind, HubError

__all__ = ["ProductOpener", "Send"]

_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})", re.IGNORECASE | re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes[ \t]+\*/([0-9]{1,18})", re.IGNORECASE | re.ASCII)
# A strong entity tag (RFC 9110 section 8.8.3), ASCII only: it is stored and sent back.
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{0,200}"', re.ASCII)


class Send(Protocol):
    """How the opener sends a GET: the client's ``request`` (credentials, redirects, deadline)."""

    def __call__(
        self,
        method: str,
        url: str,
        *,
        granule_id: str | None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """The final answer to the request, unread; raises ``HubError`` or ``DeadlineExceeded``."""
        ...


def _validator(response: urllib3.BaseHTTPResponse) -> str | None:
    """The product's strong ETag, else its Last-Modified: what ``If-Range`` may send back."""
    etag = (response.headers.get("ETag") or "").strip()
    if _STRONG_ETAG.fullmatch(etag):
        return etag
    # A weak ETag (W/"...") may not be used with If-Range (RFC 9110 section 13.1.5).
    modified = (response.headers.get("Last-Modified") or "").strip()
    if HTTP_DATE.fullmatch(modified) and email.utils.parsedate_tz(modified) is not None:
        return modified
    return None


def _range(offset: int, validator: str | None) -> dict[str, str] | None:
    if offset <= 0:
        return None
    headers = {"Range": f"bytes={offset}-"}
    # The validator comes back from storage: only a well-formed one is sent (a stray
    # CR or LF would make http.client refuse the request outright).
    if validator and (_STRONG_ETAG.fullmatch(validator) or HTTP_DATE.fullmatch(validator)):
        headers["If-Range"] = validator
    return headers


@attrs.frozen(kw_only=True)
class ProductOpener:
    """Opens product streams through ``send``; the streams read in ``chunk_size`` pieces."""

    send: Send
    chunk_size: int
    #: The read timeout: a stream must deliver a minimum per window this long.
    stall_seconds: float
    log: logging.Logger = attrs.field(repr=False)

    def open(
        self, url: str, offset: int, *, granule_id: str, validator: str | None, deadline: float | None
    ) -> ProductResponseStream:
        """The stream of the product at ``url`` from ``offset`` (or from 0); raises ``HubError``."""
        where = safe_url(url)
        response = self.send(
            "GET", url, granule_id=granule_id, headers=_range(offset, validator), deadline=deadline
        )
        match response.status:
            case 200:
                if offset:
                    extra = {"event": "hub_range_ignored", "granule_id": granule_id, "asked_offset": offset}
                    self.log.info(
                        "hub sent the whole product to a resume; restarting from byte 0", extra=extra
                    )
                return self._stream(response, 0, where, deadline)
            case 206:
                return self._partial_content(
                    response, url, offset=offset, granule_id=granule_id, deadline=deadline
                )
            case 416 if offset:
                return self._unsatisfiable(
                    response,
                    url,
                    offset=offset,
                    granule_id=granule_id,
                    validator=validator,
                    deadline=deadline,
                )
            case _:
                raise failure(response, url, deadline=deadline)

    def _partial_content(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        offset: int,
        granule_id: str,
        deadline: float | None,
    ) -> ProductResponseStream:
        """A 206: the stream when its range is the one asked for, else the whole product again."""
        where = safe_url(url)
        span = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        start, end, total = (int(g) for g in span.groups()) if span else (-1, -1, -1)
        if start == offset and end == total - 1:
            return self._stream(response, offset, where, deadline, total=total)
        discard(response, deadline)
        if offset == 0:
            raise HubError(FailureKind.BAD_RESPONSE, f"HTTP 206 from {where} with an unusable range")
        self.log.warning(
            "hub answered a different range; restarting from byte 0",
            extra={"event": "hub_range_mismatch", "granule_id": granule_id, "asked_offset": offset},
        )
        return self._restart(url, granule_id, deadline)

    def _unsatisfiable(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        *,
        offset: int,
        granule_id: str,
        validator: str | None,
        deadline: float | None,
    ) -> ProductResponseStream:
        """A 416 to a resume: nothing left to send when the partial holds the whole product, else restart."""
        unsatisfied = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        discard(response, deadline)
        if unsatisfied and int(unsatisfied.group(1)) == offset:
            # The partial already holds the whole product (If-Range matched, or the
            # hub would have sent it whole): nothing left to send.
            return ProductResponseStream(
                offset=offset,
                total_size=offset,
                response=None,
                chunk_size=self.chunk_size,
                where=safe_url(url),
                validator=validator,
            )
        self.log.warning(
            "range not satisfiable for the partial held; restarting from byte 0",
            extra={"event": "hub_range_unsatisfiable", "granule_id": granule_id, "asked_offset": offset},
        )
        return self._restart(url, granule_id, deadline)

    def _restart(self, url: str, granule_id: str, deadline: float | None) -> ProductResponseStream:
        response = self.send("GET", url, granule_id=granule_id, deadline=deadline)
        if response.status != 200:
            raise failure(response, url, deadline=deadline)
        return self._stream(response, 0, safe_url(url), deadline)

    def _stream(
        self,
        response: urllib3.BaseHTTPResponse,
        offset: int,
        where: str,
        deadline: float | None,
        *,
        total: int | None = None,
    ) -> ProductResponseStream:
        try:
            length = content_length(response)
        except HubError:
            discard(response)
            raise
        return ProductResponseStream(
            offset=offset,
            total_size=length if total is None else total,
            response=response,
            chunk_size=self.chunk_size,
            where=where,
            stall_seconds=self.stall_seconds,
            validator=_validator(response),
            deadline=deadline,
        )
