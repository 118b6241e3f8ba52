"""HTTP plumbing shared by the hub adapters: requests, redirects, status mapping, streaming.

Everything urllib3 can raise is translated into ``HubError`` here, with the table of
CONTRACT section 6; the DHuS and CDSE adapters only say where to go and with what
credentials.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeAlias

import attrs
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    ProtocolError,
    ReadTimeoutError,
)

from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.request import origin_of

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_REDIRECTS",
    "MAX_RETRY_AFTER",
    "Credentials",
    "HubHttp",
    "Origin",
    "ProductResponseStream",
    "parse_retry_after",
    "safe_url",
]

#: One read per chunk; large enough that the per-chunk Python overhead is noise.
DEFAULT_CHUNK_SIZE = 1 << 20
#: Redirect hops followed before the hub is taken to be misbehaving.
MAX_REDIRECTS = 5
#: The contract's cap on any back-off, Retry-After included.
MAX_RETRY_AFTER = 900.0

#: (scheme, host, port), as ``origin_of`` gives it.
Origin: TypeAlias = tuple[str, str, int]

_log = logging.getLogger("s2_downloader.hub")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Error bodies are read for the operator's benefit only; a body larger than this is
# not worth draining, so its connection is closed instead.
_SMALL_BODY = 64 * 1024
_JSON_LIMIT = 4 * 1024 * 1024
_SNIPPET = 200
#: The slowest a transfer may be, per read-timeout window, before it counts as stalled.
_MIN_BYTES_PER_WINDOW = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
_CONCURRENT_FLOWS = re.compile(r"concurrent\s+flow", re.IGNORECASE)
_BASE_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "s2-downloader"}


class Credentials(Protocol):
    """What a hub authenticates with: a header value, and a say in retrying a 401."""

    def authorization(self) -> str:
        """The ``Authorization`` header value to send to a credentialed origin."""
        ...

    def rejected(self, authorization: str) -> bool:
        """The hub refused ``authorization``; whether fresh credentials are worth one more try."""
        ...


def safe_url(url: str) -> str:
    """``url`` fit for messages and logs: no user info, no query, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP-date), capped.

    ``now`` is the current POSIX time, used for the HTTP-date form. ``None`` when the
    header is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _why(exc: BaseException) -> str:
    # urllib3's messages name the host and the OS error, never headers or bodies.
    return f"{type(exc).__name__}: {exc}"[:_SNIPPET]


def _origin(url: str) -> Origin:
    try:
        return origin_of(url)
    except BadRequest as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {safe_url(url)!r}") from exc


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Give the connection back: drained when the rest is small, else closed."""
    length = _content_length(response)
    try:
        if length is not None and length <= _SMALL_BODY:
            response.drain_conn()
        else:
            # Draining a large or unknown body costs more than a new connection.
            response.close()
    except (HTTPError, OSError):
        response.close()
    response.release_conn()


def _error_text(response: urllib3.BaseHTTPResponse) -> str:
    """An error response's message (DHuS ``cause-message`` and a small body) on one line; consumes it."""
    cause = response.headers.get("cause-message", "")
    body = b""
    length = _content_length(response)
    if length is not None and length <= _SMALL_BODY:
        try:
            body = response.read(_SMALL_BODY)
        except (HTTPError, OSError):
            body = b""
    _discard(response)
    return " ".join(f"{cause} {body.decode('utf-8', errors='replace')}".split())


@attrs.define
class ProductResponseStream:
    """A ``ProductStream`` over one urllib3 response; ``close`` always returns its connection."""

    offset: int
    total_size: int | None
    _response: urllib3.BaseHTTPResponse | None = attrs.field(repr=False)
    _chunk_size: int
    _where: str
    #: Over each window this long at least _MIN_BYTES_PER_WINDOW must arrive (the read timeout).
    _stall_seconds: float = 60.0
    _finished: bool = attrs.field(default=False, init=False)

    def chunks(self) -> Iterator[bytes]:
        """The body in ``chunk_size`` pieces; raises ``HubError`` when the transfer breaks."""
        response = self._response
        if response is None:
            self._finished = True
            return
        # read1 returns what has arrived (up to ``size``) after at most one socket read,
        # so the caller gets control back at least once per read timeout (to renew its
        # lease, to notice a shutdown) even when the hub trickles; read() would wait for
        # a whole chunk, however long that takes.
        read = response.read1
        size = self._chunk_size
        window = self._stall_seconds
        window_start, window_bytes = time.monotonic(), 0
        try:
            while chunk := read(size):
                yield chunk
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start >= window:
                    # A hub that drips a few bytes per read timeout would never time out.
                    if window_bytes < _MIN_BYTES_PER_WINDOW:
                        seconds = now - window_start
                        detail = (
                            f"transfer from {self._where} stalled: {window_bytes} bytes in {seconds:.0f} s"
                        )
                        raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
                    window_start, window_bytes = now, 0
        except ReadTimeoutError as exc:
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"read timed out on {self._where}") from exc
        except (HTTPError, OSError) as exc:
            detail = f"transfer from {self._where} broke: {_why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        self._finished = True

    def close(self) -> None:
        """Release the connection: back to the pool after a full body, else closed."""
        response = self._response
        if response is None:
            return
        self._response = None
        if not self._finished:
            # An abandoned body would have to be drained to reuse the connection.
            response.close()
        response.release_conn()


@attrs.define
class HubHttp:
    """Requests to one hub over a shared pool: credentials only to ``credential_origins``.

    ``follow_origins`` limits where redirects may lead (``None``: any http(s) origin,
    without credentials when it is not a credentialed one).
    """

    pool: urllib3.PoolManager
    timeout: urllib3.Timeout
    credential_origins: frozenset[Origin]
    credentials: Credentials | None = attrs.field(default=None, repr=False)
    follow_origins: frozenset[Origin] | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    log: logging.Logger = attrs.field(default=_log, repr=False)

    # -- sending --------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        granule_id: str | None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send, following redirects; on a 401 let the credentials refresh and try once more.

        Returns the final non-redirect response, unread; raises ``HubError`` when no
        response could be had.
        """
        credentials = self.credentials
        authorization = credentials.authorization() if credentials is not None else None
        response, authorized = self._follow(
            method, url, headers=headers, body=body, authorization=authorization, granule_id=granule_id
        )
        if (
            response.status == 401
            and authorized
            and credentials is not None
            and authorization is not None
            and credentials.rejected(authorization)
        ):
            _discard(response)
            self.log.info(
                "hub refused the credentials; retrying once with fresh ones",
                extra={"event": "hub_unauthorized_retry", "granule_id": granule_id},
            )
            authorization = credentials.authorization()
            response, _ = self._follow(
                method, url, headers=headers, body=body, authorization=authorization, granule_id=granule_id
            )
        return response

    def _follow(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        authorization: str | None,
        granule_id: str | None,
    ) -> tuple[urllib3.BaseHTTPResponse, bool]:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            origin = _origin(current)
            sent = dict(_BASE_HEADERS)
            if headers:
                sent.update(headers)
            authorized = authorization is not None and origin in self.credential_origins
            if authorization is not None and authorized:
                sent["Authorization"] = authorization
            response = self._send_once(method, current, sent, body)
            if response.status not in _REDIRECTS or method != "GET":
                return response, authorized
            location = response.headers.get("Location")
            _discard(response)
            if not location:
                detail = f"HTTP {response.status} from {safe_url(current)} without a Location"
                raise HubError(FailureKind.BAD_RESPONSE, detail)
            target = urllib.parse.urljoin(current, location)
            target_origin = _origin(target)
            if self.follow_origins is not None and target_origin not in self.follow_origins:
                detail = (
                    f"redirect from {safe_url(current)} to {safe_url(target)}, outside the configured hub"
                )
                raise HubError(FailureKind.BAD_RESPONSE, detail)
            self.log.info(
                "hub redirected",
                extra={
                    "event": "hub_redirect",
                    "granule_id": granule_id,
                    "location": safe_url(target),
                    "with_credentials": target_origin in self.credential_origins,
                },
            )
            current = target
        raise HubError(FailureKind.BAD_RESPONSE, f"more than {MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> urllib3.BaseHTTPResponse:
        where = safe_url(url)
        try:
            # retries=False: urllib3 raises the real error, and redirects are ours to follow
            # because only we know where credentials may go.
            return self.pool.request(
                method,
                url,
                headers=headers,
                body=body,
                timeout=self.timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
                enforce_content_length=True,
            )
        except ConnectTimeoutError as exc:  # also NewConnectionError: refused, unreachable, DNS
            raise HubError(FailureKind.SERVER_ERROR, f"cannot connect to {where}: {_why(exc)}") from exc
        except ReadTimeoutError as exc:
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"no answer from {where} in time") from exc
        except ProtocolError as exc:
            detail = f"connection to {where} broke before an answer: {_why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        except LocationValueError as exc:
            raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {where!r}") from exc
        except (HTTPError, OSError) as exc:
            raise HubError(FailureKind.SERVER_ERROR, f"request to {where} failed: {_why(exc)}") from exc

    # -- reading --------------------------------------------------------------------

    def failure(self, response: urllib3.BaseHTTPResponse, url: str) -> HubError:
        """The ``HubError`` an unwanted status stands for; consumes and releases ``response``."""
        status = response.status
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        message = _error_text(response)
        detail = f"HTTP {status} from {safe_url(url)}" + (f": {message[:_SNIPPET]}" if message else "")
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

    def read_json(self, response: urllib3.BaseHTTPResponse, url: str) -> Any:
        """The JSON body of a 200 ``response`` (else the status's ``HubError``); releases it."""
        if response.status != 200:
            raise self.failure(response, url)
        where = safe_url(url)
        length = _content_length(response)
        if length is not None and length > _JSON_LIMIT:
            _discard(response)
            raise HubError(FailureKind.BAD_RESPONSE, f"{length}-byte answer from {where} is too large")
        try:
            raw = response.read(_JSON_LIMIT + 1)
        except ReadTimeoutError as exc:
            _discard(response)
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"read timed out on {where}") from exc
        except (HTTPError, OSError) as exc:
            _discard(response)
            detail = f"answer from {where} broke: {_why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        _discard(response)
        if len(raw) > _JSON_LIMIT:
            raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is too large")
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is not JSON") from exc

    def open_stream(self, url: str, offset: int, *, granule_id: str) -> ProductResponseStream:
        """GET the product from ``offset`` (CONTRACT section 4's resume rules); raises ``HubError``."""
        where = safe_url(url)
        response = self.request("GET", url, granule_id=granule_id, headers=_range(offset))
        status = response.status
        if status == 200:
            if offset:
                self.log.info(
                    "hub ignored the range; restarting from byte 0",
                    extra={"event": "hub_range_ignored", "granule_id": granule_id, "asked_offset": offset},
                )
            return self._stream(response, 0, _content_length(response), where)
        if status == 206:
            span = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            start, end, total = (int(g) for g in span.groups()) if span else (-1, -1, -1)
            if start == offset and end == total - 1:
                return self._stream(response, offset, total, where)
            if offset == 0:
                _discard(response)
                raise HubError(FailureKind.BAD_RESPONSE, f"HTTP 206 from {where} with an unusable range")
            _discard(response)
            self.log.warning(
                "hub answered a different range; restarting from byte 0",
                extra={"event": "hub_range_mismatch", "granule_id": granule_id, "asked_offset": offset},
            )
            return self._restart(url, granule_id)
        if status == 416 and offset:
            unsatisfied = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            _discard(response)
            if unsatisfied and int(unsatisfied.group(1)) == offset:
                # The partial already holds the whole product: nothing left to send.
                return ProductResponseStream(
                    offset=offset, total_size=offset, response=None, chunk_size=self.chunk_size, where=where
                )
            self.log.warning(
                "range not satisfiable for the partial held; restarting from byte 0",
                extra={"event": "hub_range_unsatisfiable", "granule_id": granule_id, "asked_offset": offset},
            )
            return self._restart(url, granule_id)
        raise self.failure(response, url)

    def _restart(self, url: str, granule_id: str) -> ProductResponseStream:
        response = self.request("GET", url, granule_id=granule_id)
        if response.status != 200:
            raise self.failure(response, url)
        return self._stream(response, 0, _content_length(response), safe_url(url))

    def _stream(
        self, response: urllib3.BaseHTTPResponse, offset: int, total: int | None, where: str
    ) -> ProductResponseStream:
        return ProductResponseStream(
            offset=offset,
            total_size=total,
            response=response,
            chunk_size=self.chunk_size,
            where=where,
            stall_seconds=_read_timeout(self.timeout),
        )


def _read_timeout(timeout: urllib3.Timeout) -> float:
    read = timeout.read_timeout
    return float(read) if isinstance(read, int | float) else 60.0


def _range(offset: int) -> dict[str, str] | None:
    return {"Range": f"bytes={offset}-"} if offset > 0 else None
