"""The hub's HTTP client: requests over the process's pool, credentials, redirects, timeouts.

Everything urllib3 can raise is translated into ``HubError`` (or ``DeadlineExceeded``)
here and in the modules beside it, with the table of the hub's answers in
docs/interface.md; the DHuS and CDSE adapters only say where to go and with what
credentials. Where requests may go is ``redirects.py``; bodies read whole are
``bodies.py``; a product's stream is ``resume.py`` and ``stream.py``; deadlines are
``deadlines.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

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

from s2_downloader.adapters.hub import answers, bodies
from s2_downloader.adapters.hub.bodies import discard, why
from s2_downloader.adapters.hub.credentials import Credentials
from s2_downloader.adapters.hub.deadlines import time_left, timeout_seconds
from s2_downloader.adapters.hub.redirects import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    redirect_target,
    request_headers,
    request_origin,
)
from s2_downloader.adapters.hub.resume import ProductOpener
from s2_downloader.adapters.hub.stream import DEFAULT_CHUNK_SIZE, ProductResponseStream
from s2_downloader.adapters.hub.urls import Origin, safe_url
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError

__all__ = ["HubHttp"]

_log = logging.getLogger("s2_downloader.hub")


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
            discard(response, deadline)
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
        origin = request_origin(current)
        for _hop in range(MAX_REDIRECTS + 1):
            sent, authorized = request_headers(origin, headers, authorization, self.credential_origins)
            response = self._send_once(method, current, sent, body, deadline)
            if response.status not in REDIRECT_STATUSES or method != "GET":
                return response, authorized
            current, origin = redirect_target(
                current, response, may_follow=self.may_follow, deadline=deadline
            )
            self.log.info(
                "hub redirected",
                extra={
                    "event": "hub_redirect",
                    "granule_id": granule_id,
                    "location": safe_url(current),
                    "with_credentials": origin in self.credential_origins,
                },
            )
        raise HubError(FailureKind.BAD_RESPONSE, f"more than {MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _timeout(self, deadline: float | None, where: str) -> tuple[urllib3.Timeout, bool]:
        """The timeout for one request, cut to the time left; whether the deadline cut it."""
        left = time_left(deadline, f"a request to {where}")
        if left is None:
            return self.timeout, False
        connect, read = (
            timeout_seconds(self.timeout.connect_timeout),
            timeout_seconds(self.timeout.read_timeout),
        )
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
            raise HubError(FailureKind.SERVER_ERROR, f"cannot connect to {where}: {why(exc)}") from exc
        except ConnectTimeoutError as exc:
            if capped:
                raise DeadlineExceeded(f"out of time connecting to {where}") from exc
            raise HubError(FailureKind.SERVER_ERROR, f"cannot connect to {where}: {why(exc)}") from exc
        except ReadTimeoutError as exc:
            if capped:
                raise DeadlineExceeded(f"out of time waiting for {where}") from exc
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"no answer from {where} in time") from exc
        except ProtocolError as exc:
            detail = f"connection to {where} broke before an answer: {why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        except LocationValueError as exc:
            raise HubError(FailureKind.BAD_RESPONSE, f"unusable URL {where!r}") from exc
        except (HTTPError, OSError) as exc:
            raise HubError(FailureKind.SERVER_ERROR, f"request to {where} failed: {why(exc)}") from exc

    # -- reading --------------------------------------------------------------------

    def failure(
        self, response: urllib3.BaseHTTPResponse, url: str, *, deadline: float | None = None
    ) -> HubError:
        """The ``HubError`` an unwanted status stands for; consumes and releases ``response``."""
        return answers.failure(response, url, deadline=deadline)

    def read_json(
        self, response: urllib3.BaseHTTPResponse, url: str, *, deadline: float | None = None
    ) -> Any:
        """The JSON body of a 200 ``response`` (else the status's ``HubError``); releases it.

        The whole body must arrive within one read timeout (a hub's JSON answer is a few
        kilobytes) and before ``deadline``.
        """
        if response.status != 200:
            raise self.failure(response, url, deadline=deadline)
        read_timeout = timeout_seconds(self.timeout.read_timeout)
        return bodies.read_json(response, safe_url(url), read_timeout=read_timeout, deadline=deadline)

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

        The resume rules of ``resume.py``: with ``validator`` (what an earlier stream's
        ``validator`` was) a resume is conditional. Raises ``HubError``, or
        ``DeadlineExceeded`` once ``deadline`` has passed, reads included.
        """
        opener = ProductOpener(
            send=self.request,
            chunk_size=self.chunk_size,
            stall_seconds=timeout_seconds(self.timeout.read_timeout),
            log=self.log,
        )
        stream = opener.open(url, offset, granule_id=granule_id, validator=validator, deadline=deadline)
        try:
            yield stream
        finally:
            stream.close()
