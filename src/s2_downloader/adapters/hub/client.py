"""HTTP plumbing shared by the hub adapters: requests, redirects, status mapping, streaming.

Everything urllib3 can raise is translated into ``HubError`` (or ``DeadlineExceeded``)
here, with the table of the hub's answers in docs/interface.md; the DHuS and CDSE
adapters only say where to go and with what credentials.

Where a request goes is decided by ``check_url`` (urllib3's own parser, held to the URL
rules), for the first URL and for every redirect ``Location``; credentials are attached
only when that origin is one of ``credential_origins``.

Deadlines: every public call takes ``deadline``, an absolute ``time.monotonic()``
instant. Connect and read timeouts are cut to the time left, the socket's timeout is
re-cut before every read of a body, and bodies read whole (JSON, error text) have an
overall limit as well, so no blocking step outlives the deadline, however slowly the hub
trickles.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeGuard

import attrs
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from s2_downloader.adapters.hub.urls import Origin, check_redirect, check_url, shown
from s2_downloader.domain.errors import BadRequest, DeadlineExceeded, FailureKind, HubError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_REDIRECTS",
    "MAX_RETRY_AFTER",
    "Credentials",
    "HubHttp",
    "Origin",
    "ProductResponseStream",
    "is_md5",
    "parse_retry_after",
    "safe_url",
    "time_left",
]

#: One read per chunk; large enough that the per-chunk Python overhead is noise.
DEFAULT_CHUNK_SIZE = 1 << 20
#: Redirect hops followed before the hub is taken to be misbehaving.
MAX_REDIRECTS = 5
#: The contract's cap on any back-off, Retry-After included.
MAX_RETRY_AFTER = 900.0

_log = logging.getLogger("s2_downloader.hub")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Error bodies are read for the operator's benefit only; a body larger than this is
# not worth draining, so its connection is closed instead.
_SMALL_BODY = 64 * 1024
#: Longest an error body or a small body being drained may take: it is only worth a
#: reused connection or a log line, never an attempt's time.
_SMALL_BODY_SECONDS = 2.0
_JSON_LIMIT = 4 * 1024 * 1024
_CLOCK_SLACK = 0.01
_READ_PIECE = 64 * 1024
_SNIPPET = 200
#: The slowest a transfer may be, per read-timeout window, before it counts as stalled.
_MIN_BYTES_PER_WINDOW = 64 * 1024
# ASCII only: str.isdigit and \d accept digits int() refuses (superscripts) or reads
# unexpectedly (other scripts). 18 digits keep every value inside a 64-bit integer.
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})", re.IGNORECASE | re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes[ \t]+\*/([0-9]{1,18})", re.IGNORECASE | re.ASCII)
_CONCURRENT_FLOWS = re.compile(r"concurrent\s+flow", re.IGNORECASE)
_MD5 = re.compile(r"[0-9A-Fa-f]{32}", re.ASCII)
# A strong entity tag (RFC 9110 section 8.8.3), ASCII only: it is stored and sent back.
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{0,200}"', re.ASCII)
_HTTP_DATE = re.compile(r"[\x20-\x7e]{1,64}", re.ASCII)
_BASE_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "s2-downloader"}


class Credentials(Protocol):
    """What a hub authenticates with: a header value, and a say in retrying a 401."""

    def authorization(self, *, deadline: float | None = None) -> str:
        """The ``Authorization`` header value to send to a credentialed origin."""
        ...

    def rejected(self, authorization: str) -> bool:
        """The hub refused ``authorization``; whether fresh credentials are worth one more try."""
        ...


def is_md5(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an MD5 as hubs publish it: 32 hex digits, either case."""
    return isinstance(value, str) and _MD5.fullmatch(value) is not None


def time_left(deadline: float | None, what: str) -> float | None:
    """Seconds until ``deadline`` (``None``: no deadline); ``DeadlineExceeded`` when none are left."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"out of time before {what}")
    return left


def safe_url(url: str) -> str:
    """``url`` fit for messages and logs: no user info, no query, no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"[:_SNIPPET]


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
    elif _HTTP_DATE.fullmatch(text):
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    else:
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _why(exc: BaseException) -> str:
    # urllib3's messages name the host and the OS error, never headers or bodies.
    return f"{type(exc).__name__}: {exc}"[:_SNIPPET]


def _origin(url: str) -> Origin:
    try:
        return check_url(url)
    except BadRequest as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {shown(url)!r}") from exc


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
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
        return _content_length(response)
    except HubError:
        return None


def _set_read_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    """Cut the socket's per-read timeout while a body is read (urllib3 set it at request time)."""
    connection = response.connection
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


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
        _set_read_timeout(response, min(read_timeout, left))
        try:
            piece = response.read1(min(_READ_PIECE, limit + 1 - size))
        except ReadTimeoutError:
            # The socket's timeout was cut to ``until``: timing out there is running out of time.
            if time.monotonic() >= until - _CLOCK_SLACK:
                return b"".join(parts), False
            raise
        if not piece:
            return b"".join(parts), True
        parts.append(piece)
        size += len(piece)
    return b"".join(parts), True


def _discard(response: urllib3.BaseHTTPResponse, deadline: float | None = None) -> None:
    """Give the connection back: drained when the rest is small and quick, else closed."""
    length = _lenient_length(response)
    complete = False
    if length is not None and length <= _SMALL_BODY:
        until = time.monotonic() + _SMALL_BODY_SECONDS
        if deadline is not None:
            until = min(until, deadline)
        try:
            _, complete = _read_until(response, _SMALL_BODY, until, _SMALL_BODY_SECONDS)
        except (HTTPError, OSError):
            complete = False
    if not complete:
        # Draining a large, unknown or slow body costs more than a new connection.
        response.close()
    response.release_conn()


def _error_text(response: urllib3.BaseHTTPResponse, deadline: float | None) -> str:
    """An error response's message (DHuS ``cause-message`` and a small body) on one line; consumes it."""
    cause = response.headers.get("cause-message", "")
    body = b""
    complete = False
    length = _lenient_length(response)
    if length is not None and length <= _SMALL_BODY:
        until = time.monotonic() + _SMALL_BODY_SECONDS
        if deadline is not None:
            until = min(until, deadline)
        try:
            body, complete = _read_until(response, _SMALL_BODY, until, _SMALL_BODY_SECONDS)
        except (HTTPError, OSError):
            body, complete = b"", False
    if not complete:
        response.close()
    response.release_conn()
    return " ".join(f"{cause} {body.decode('utf-8', errors='replace')}".split())


def _validator(response: urllib3.BaseHTTPResponse) -> str | None:
    """The product's strong ETag, else its Last-Modified: what ``If-Range`` may send back."""
    etag = (response.headers.get("ETag") or "").strip()
    if _STRONG_ETAG.fullmatch(etag):
        return etag
    # A weak ETag (W/"...") may not be used with If-Range (RFC 9110 section 13.1.5).
    modified = (response.headers.get("Last-Modified") or "").strip()
    if _HTTP_DATE.fullmatch(modified) and email.utils.parsedate_tz(modified) is not None:
        return modified
    return None


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
    #: The strong ETag or Last-Modified of the response that carries the body.
    validator: str | None = None
    _deadline: float | None = attrs.field(default=None, repr=False)
    _finished: bool = attrs.field(default=False, init=False)

    def chunks(self) -> Iterator[bytes]:
        """The body in ``chunk_size`` pieces; raises ``HubError`` when the transfer breaks.

        Raises ``DeadlineExceeded`` once the deadline has passed: each read is cut to
        the time left, and the deadline is checked between reads.
        """
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
        deadline = self._deadline
        window_start, window_bytes = time.monotonic(), 0
        capped = False
        try:
            while True:
                if deadline is not None:
                    left = time_left(deadline, f"the next read from {self._where}")
                    assert left is not None
                    capped = left < window
                    _set_read_timeout(response, min(window, left))
                chunk = read(size)
                if not chunk:
                    break
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
            if capped:
                raise DeadlineExceeded(f"out of time reading from {self._where}") from exc
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

    ``follow_origins`` limits where redirects may lead (``None``: any origin the URL
    rules allow, without credentials when it is not a credentialed one).
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
        deadline: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send, following redirects; on a 401 let the credentials refresh and try once more.

        Returns the final non-redirect response, unread; raises ``HubError`` when no
        response could be had, ``DeadlineExceeded`` when the deadline passed first.
        """
        credentials = self.credentials
        authorization = credentials.authorization(deadline=deadline) if credentials is not None else None
        response, authorized = self._follow(
            method,
            url,
            headers=headers,
            body=body,
            authorization=authorization,
            granule_id=granule_id,
            deadline=deadline,
        )
        if (
            response.status == 401
            and authorized
            and credentials is not None
            and authorization is not None
            and credentials.rejected(authorization)
        ):
            _discard(response, deadline)
            self.log.info(
                "hub refused the credentials; retrying once with fresh ones",
                extra={"event": "hub_unauthorized_retry", "granule_id": granule_id},
            )
            authorization = credentials.authorization(deadline=deadline)
            response, _ = self._follow(
                method,
                url,
                headers=headers,
                body=body,
                authorization=authorization,
                granule_id=granule_id,
                deadline=deadline,
            )
        return response

    def may_follow(self, origin: Origin) -> bool:
        """Whether a redirect to ``origin`` is followed."""
        return self.follow_origins is None or origin in self.follow_origins

    def _follow(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        authorization: str | None,
        granule_id: str | None,
        deadline: float | None,
    ) -> tuple[urllib3.BaseHTTPResponse, bool]:
        """The first non-redirect answer (a GET's redirects followed), and whether it was sent credentials."""
        current = url
        # The parser that decides the origin is the one urllib3 uses to connect.
        origin = _origin(current)
        for _hop in range(MAX_REDIRECTS + 1):
            sent, authorized = self._headers(origin, headers, authorization)
            response = self._send_once(method, current, sent, body, deadline)
            if response.status not in _REDIRECTS or method != "GET":
                return response, authorized
            current, origin = self._redirect(current, response, granule_id, deadline)
        raise HubError(FailureKind.BAD_RESPONSE, f"more than {MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _headers(
        self, origin: Origin, headers: Mapping[str, str] | None, authorization: str | None
    ) -> tuple[dict[str, str], bool]:
        """The headers for a request to ``origin``; whether they carry the credentials."""
        sent = {**_BASE_HEADERS, **(headers or {})}
        if authorization is None or origin not in self.credential_origins:
            return sent, False
        sent["Authorization"] = authorization
        return sent, True

    def _redirect(
        self, current: str, response: urllib3.BaseHTTPResponse, granule_id: str | None, deadline: float | None
    ) -> tuple[str, Origin]:
        """Where a redirect ``response`` (released here) leads; ``HubError`` when it may not be followed."""
        location = response.headers.get("Location")
        _discard(response, deadline)
        if not location:
            detail = f"HTTP {response.status} from {safe_url(current)} without a Location"
            raise HubError(FailureKind.BAD_RESPONSE, detail)
        try:
            target, origin = check_redirect(current, location)
        except BadRequest as exc:
            detail = f"redirect from {safe_url(current)} to an unusable Location {shown(location)!r}"
            raise HubError(FailureKind.BAD_RESPONSE, detail) from exc
        if not self.may_follow(origin):
            detail = f"redirect from {safe_url(current)} to {safe_url(target)}, outside the configured hub"
            raise HubError(FailureKind.BAD_RESPONSE, detail)
        self.log.info(
            "hub redirected",
            extra={
                "event": "hub_redirect",
                "granule_id": granule_id,
                "location": safe_url(target),
                "with_credentials": origin in self.credential_origins,
            },
        )
        return target, origin

    def _timeout(self, deadline: float | None, where: str) -> tuple[urllib3.Timeout, bool]:
        """The timeout for one request, cut to the time left; whether the deadline cut it."""
        left = time_left(deadline, f"a request to {where}")
        if left is None:
            return self.timeout, False
        connect, read = _seconds(self.timeout.connect_timeout), _seconds(self.timeout.read_timeout)
        capped = left < connect or left < read
        return urllib3.Timeout(connect=min(connect, left), read=min(read, left)), capped

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, deadline: float | None
    ) -> urllib3.BaseHTTPResponse:
        where = safe_url(url)
        timeout, capped = self._timeout(deadline, where)
        try:
            # retries=False: urllib3 raises the real error, and redirects are ours to follow
            # because only we know where credentials may go.
            return self.pool.request(
                method,
                url,
                headers=headers,
                body=body,
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
                enforce_content_length=True,
            )
        except NewConnectionError as exc:  # refused, unreachable, DNS
            raise HubError(FailureKind.SERVER_ERROR, f"cannot connect to {where}: {_why(exc)}") from exc
        except ConnectTimeoutError as exc:
            if capped:
                raise DeadlineExceeded(f"out of time connecting to {where}") from exc
            raise HubError(FailureKind.SERVER_ERROR, f"cannot connect to {where}: {_why(exc)}") from exc
        except ReadTimeoutError as exc:
            if capped:
                raise DeadlineExceeded(f"out of time waiting for {where}") from exc
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"no answer from {where} in time") from exc
        except ProtocolError as exc:
            detail = f"connection to {where} broke before an answer: {_why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        except LocationValueError as exc:
            raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {where!r}") from exc
        except (HTTPError, OSError) as exc:
            raise HubError(FailureKind.SERVER_ERROR, f"request to {where} failed: {_why(exc)}") from exc

    # -- reading --------------------------------------------------------------------

    def failure(
        self, response: urllib3.BaseHTTPResponse, url: str, *, deadline: float | None = None
    ) -> HubError:
        """The ``HubError`` an unwanted status stands for; consumes and releases ``response``."""
        status = response.status
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        message = _error_text(response, deadline)
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

    def read_json(
        self, response: urllib3.BaseHTTPResponse, url: str, *, deadline: float | None = None
    ) -> Any:
        """The JSON body of a 200 ``response`` (else the status's ``HubError``); releases it.

        The whole body must arrive within one read timeout (a hub's JSON answer is a few
        kilobytes) and before ``deadline``.
        """
        if response.status != 200:
            raise self.failure(response, url, deadline=deadline)
        where = safe_url(url)
        try:
            length = _content_length(response)
        except HubError:
            _discard(response)
            raise
        if length is not None and length > _JSON_LIMIT:
            _discard(response)
            raise HubError(FailureKind.BAD_RESPONSE, f"{length}-byte answer from {where} is too large")
        read_timeout = _seconds(self.timeout.read_timeout)
        budget = time.monotonic() + read_timeout
        until = budget if deadline is None else min(budget, deadline)
        try:
            raw, complete = _read_until(response, _JSON_LIMIT, until, read_timeout)
        except ReadTimeoutError as exc:
            _discard(response)
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"read timed out on {where}") from exc
        except (HTTPError, OSError) as exc:
            _discard(response)
            detail = f"answer from {where} broke: {_why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        if not complete:
            response.close()
            response.release_conn()
            if deadline is not None and until == deadline:
                raise DeadlineExceeded(f"out of time reading the answer from {where}")
            detail = f"answer from {where} took longer than {read_timeout:g} s"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
        if len(raw) > _JSON_LIMIT:
            response.close()
            response.release_conn()
            raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is too large")
        response.release_conn()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
            raise HubError(FailureKind.BAD_RESPONSE, f"answer from {where} is not JSON") from exc

    def get_json(self, url: str, *, granule_id: str | None, deadline: float | None = None) -> Any:
        """GET ``url`` and return its JSON answer (``read_json``); raises ``HubError``."""
        response = self.request(
            "GET", url, granule_id=granule_id, headers={"Accept": "application/json"}, deadline=deadline
        )
        return self.read_json(response, url, deadline=deadline)

    @contextlib.contextmanager
    def product(
        self,
        url: str,
        offset: int,
        *,
        granule_id: str,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> Iterator[ProductResponseStream]:
        """Stream the product at ``url`` from ``offset``; the connection is released on exit.

        The resume rules of docs/interface.md: with ``validator`` (what an earlier
        stream's ``validator`` was) a resume is conditional, and ``If-Range`` makes a hub
        whose product changed answer 200 with the whole new product, which starts from
        byte 0 (the stream's ``offset`` says so). Raises ``HubError``, or
        ``DeadlineExceeded`` once ``deadline`` has passed, reads included.
        """
        stream = self._open_stream(url, offset, granule_id=granule_id, validator=validator, deadline=deadline)
        try:
            yield stream
        finally:
            stream.close()

    def _open_stream(
        self, url: str, offset: int, *, granule_id: str, validator: str | None, deadline: float | None
    ) -> ProductResponseStream:
        where = safe_url(url)
        response = self.request(
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
                raise self.failure(response, url, deadline=deadline)

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
        _discard(response, deadline)
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
        _discard(response, deadline)
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
        response = self.request("GET", url, granule_id=granule_id, deadline=deadline)
        if response.status != 200:
            raise self.failure(response, url, deadline=deadline)
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
            length = _content_length(response)
        except HubError:
            _discard(response)
            raise
        return ProductResponseStream(
            offset=offset,
            total_size=length if total is None else total,
            response=response,
            chunk_size=self.chunk_size,
            where=where,
            stall_seconds=_seconds(self.timeout.read_timeout),
            validator=_validator(response),
            deadline=deadline,
        )


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 60.0


def _range(offset: int, validator: str | None) -> dict[str, str] | None:
    if offset <= 0:
        return None
    headers = {"Range": f"bytes={offset}-"}
    # The validator comes back from storage: only a well-formed one is sent (a stray
    # CR or LF would make http.client refuse the request outright).
    if validator and (_STRONG_ETAG.fullmatch(validator) or _HTTP_DATE.fullmatch(validator)):
        headers["If-Range"] = validator
    return headers
